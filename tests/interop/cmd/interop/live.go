package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"atrest.test/interop/kubecodec"
)

// Etcd is one etcd server the driver started on loopback, in a temporary data directory.
type Etcd struct {
	Endpoint string
	cmd      *exec.Cmd
	dir      string
	done     chan error
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startEtcd runs the etcd binary with the flags every version since 3.4 accepts and waits
// until its JSON gateway answers.
func startEtcd(binary, tmp string) (*Etcd, error) {
	dir, err := os.MkdirTemp(tmp, "etcd-")
	if err != nil {
		return nil, err
	}
	cp, err := freePort()
	if err != nil {
		return nil, err
	}
	pp, err := freePort()
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", cp)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pp)
	log, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(binary, "--name", "interop", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "interop="+peer, "--log-level", "error")
	cmd.Stdout, cmd.Stderr = log, log
	// etcd dies with the driver, even when the driver is killed or crashes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", binary, err)
	}
	e := &Etcd{Endpoint: client, cmd: cmd, dir: dir, done: make(chan error, 1)}
	go func() { e.done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := e.Range("/"); err == nil {
			return e, nil
		}
		select {
		case err := <-e.done:
			text, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			return nil, fmt.Errorf("%s exited early (%v):\n%s", binary, err, text)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.Stop()
			return nil, fmt.Errorf("%s did not answer on %s within 30 s", binary, client)
		}
	}
}

// Stop kills the server and waits for it.
func (e *Etcd) Stop() {
	_ = e.cmd.Process.Kill()
	<-e.done
}

func (e *Etcd) post(path string, req, resp any) error {
	body, _ := json.Marshal(req)
	r, err := http.Post(e.Endpoint+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: HTTP %s", path, r.Status)
	}
	return json.NewDecoder(r.Body).Decode(resp)
}

// Put stores one value through etcd's JSON gateway (/v3/kv/put, served by 3.4 and later).
func (e *Etcd) Put(key string, value []byte) error {
	var resp map[string]any
	return e.post("/v3/kv/put", map[string]string{
		"key":   base64.StdEncoding.EncodeToString([]byte(key)),
		"value": base64.StdEncoding.EncodeToString(value),
	}, &resp)
}

// Range reads every key with the prefix.
func (e *Etcd) Range(prefix string) (map[string][]byte, error) {
	end := []byte(prefix)
	end[len(end)-1]++
	var resp struct {
		Kvs []struct {
			Key   []byte `json:"key"`
			Value []byte `json:"value"`
		} `json:"kvs"`
	}
	err := e.post("/v3/kv/range", map[string]string{
		"key":       base64.StdEncoding.EncodeToString([]byte(prefix)),
		"range_end": base64.StdEncoding.EncodeToString(end),
	}, &resp)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out, nil
}

// liveTests stores each scenario's values in a fresh etcd of this version and holds atrest's
// audit, live rewrite and offline rewrite to kube-apiserver's reading of the same values.
func liveTests(s *Suite, version, binary string, scenarios []*Scenario) {
	o := &s.opts
	if len(scenarios) == 0 {
		return
	}
	var etcd *Etcd
	s.Run("live/etcd-"+version+"/start", func() (err error) {
		etcd, err = startEtcd(binary, o.tmp)
		return err
	})
	if etcd == nil {
		return
	}
	defer etcd.Stop()
	for _, sc := range scenarios {
		s.Run("live/etcd-"+version+"/"+sc.Name, func() error {
			path, codec, err := sc.Config.Load(o.tmp, sc.Name+"-live-"+version)
			if err != nil {
				return err
			}
			defer codec.Close()
			for _, v := range sc.Values {
				if err := etcd.Put(v.Key, v.Stored); err != nil {
					return err
				}
			}
			snapshot := filepath.Join(o.tmp, sc.Name+"-"+version+".db")
			if out, err := exec.Command(o.Etcdctl, "--endpoints", etcd.Endpoint, "snapshot", "save", snapshot).CombinedOutput(); err != nil {
				return fmt.Errorf("etcdctl snapshot save: %w: %s", err, out)
			}
			before := map[string]KubeVerdict{}
			for _, v := range sc.Values {
				plain, stale, err := codec.Decrypt(kubecodec.ParseGroupResource(v.Res), v.Key, v.Stored)
				before[v.Key] = KubeVerdict{Plain: plain, Stale: stale, Err: err}
			}
			for _, res := range coreResources {
				prefix := sc.Root + "/" + res + "/"
				if err := liveAudit(o, etcd, path, sc, res, prefix, before); err != nil {
					return fmt.Errorf("audit %s: %w\nconfig: %s", prefix, err, describe(sc.Config))
				}
				if err := liveRewrite(o, etcd, path, prefix); err != nil {
					return err
				}
			}
			after, err := etcd.Range(sc.Root + "/")
			if err != nil {
				return err
			}
			if err := afterRewrite(codec, sc, before, after, "live rewrite"); err != nil {
				return fmt.Errorf("%w\nconfig: %s", err, describe(sc.Config))
			}
			// Offline: the snapshot taken before the live rewrite, rewritten one prefix at a time.
			in := snapshot
			for i, res := range coreResources {
				out := fmt.Sprintf("%s.%d.db", snapshot, i)
				_, stderr, code, err := o.atrest(nil, "rewrite", "--config", path, "--prefix", sc.Root+"/"+res+"/",
					"--allow-decrypt", "--snapshot", in, "--out", out, "-o", "json")
				if err != nil {
					return err
				}
				if code > 1 {
					return fmt.Errorf("atrest rewrite --snapshot (%s) exit %d: %s", res, code, stderr)
				}
				in = out
			}
			offline, err := readSnapshot(in, sc.Root+"/")
			if err != nil {
				return fmt.Errorf("reading atrest's rewritten snapshot %s: %w", in, err)
			}
			if err := afterRewrite(codec, sc, before, offline, "offline rewrite"); err != nil {
				return fmt.Errorf("%w\nconfig: %s", err, describe(sc.Config))
			}
			return nil
		})
	}
}

func liveAudit(o *Options, etcd *Etcd, config string, sc *Scenario, res, prefix string, before map[string]KubeVerdict) error {
	out, stderr, code, err := o.atrest(nil, "audit", "--endpoints", etcd.Endpoint, "--config", config, "--prefix", prefix, "-o", "json")
	if err != nil {
		return err
	}
	if code > 1 {
		return fmt.Errorf("atrest audit exit %d: %s", code, stderr)
	}
	var report struct {
		Entries []Inspection `json:"entries"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		return fmt.Errorf("atrest audit output: %w", err)
	}
	want := 0
	for _, v := range sc.Values {
		if v.Res == res {
			want++
		}
	}
	if len(report.Entries) != want {
		return fmt.Errorf("atrest audit reports %d entries, etcd holds %d", len(report.Entries), want)
	}
	for _, in := range report.Entries {
		kube, ok := before[in.Key]
		if !ok {
			return fmt.Errorf("atrest audit reports %q, which was never written", in.Key)
		}
		if err := agree(in, writeIdentity(sc.Config, res), kube); err != nil {
			return fmt.Errorf("%s: %w", in.Key, err)
		}
	}
	return nil
}

func liveRewrite(o *Options, etcd *Etcd, config, prefix string) error {
	_, stderr, code, err := o.atrest(nil, "rewrite", "--endpoints", etcd.Endpoint, "--config", config,
		"--prefix", prefix, "--allow-decrypt", "-o", "json")
	if err != nil {
		return err
	}
	if code > 1 {
		return fmt.Errorf("atrest rewrite %s exit %d: %s", prefix, code, stderr)
	}
	return nil
}

// afterRewrite: every value kube-apiserver could read before is read by it now, to the same
// bytes and not stale; every encrypted value it could not read is untouched.
func afterRewrite(codec *kubecodec.Codec, sc *Scenario, before map[string]KubeVerdict, after map[string][]byte, what string) error {
	if len(after) != len(sc.Values) {
		return fmt.Errorf("%s: %d keys after, %d before", what, len(after), len(sc.Values))
	}
	var problems []string
	for _, v := range sc.Values {
		stored, ok := after[v.Key]
		if !ok {
			problems = append(problems, v.Key+": gone")
			continue
		}
		if before[v.Key].Err != nil && bytes.HasPrefix(v.Stored, []byte("k8s:enc:")) {
			// Encrypted with a key the config lacks, or damaged: never touched.
			if !bytes.Equal(stored, v.Stored) {
				problems = append(problems, v.Key+": kube could not read it, and atrest changed it")
			}
			continue
		}
		// Readable values, and plaintext that kube cannot read because the config has no
		// identity provider (atrest encrypts it, so that kube can), are read by kube now.
		plain, stale, err := codec.Decrypt(kubecodec.ParseGroupResource(v.Res), v.Key, stored)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: kube-apiserver cannot read atrest's rewrite: %v", v.Key, err))
		case !bytes.Equal(plain, wantPlain(before[v.Key], v)):
			problems = append(problems, v.Key+": kube-apiserver reads other bytes after the rewrite")
		case stale:
			problems = append(problems, fmt.Sprintf("%s: still stale for kube-apiserver after the rewrite (%q…)", v.Key, head(stored)))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s:\n  %s", what, strings.Join(problems, "\n  "))
	}
	return nil
}

// wantPlain is what kube must read after a rewrite: what it read before, or, for plaintext it
// could not read (no identity provider), the stored bytes themselves.
func wantPlain(before KubeVerdict, v *Value) []byte {
	if before.Err == nil {
		return before.Plain
	}
	return v.Stored
}
