package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// atrest runs the atrest binary with stdin and returns stdout, stderr and the exit status.
func (o *Options) atrest(stdin []byte, args ...string) (stdout, stderr []byte, code int, err error) {
	cmd := exec.Command(o.Atrest, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return out.Bytes(), errb.Bytes(), exit.ExitCode(), nil
	}
	if err != nil {
		return nil, nil, -1, fmt.Errorf("running %s: %w", o.Atrest, err)
	}
	return out.Bytes(), errb.Bytes(), 0, nil
}

func (o *Options) atrestEncrypt(config, etcdKey string, plain []byte) ([]byte, error) {
	out, stderr, code, err := o.atrest(plain, "encrypt", "--config", config, "--etcd-key", etcdKey)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("atrest encrypt exit %d: %s", code, strings.TrimSpace(string(stderr)))
	}
	return out, nil
}

func (o *Options) atrestDecrypt(config, etcdKey string, stored []byte) ([]byte, error) {
	out, stderr, code, err := o.atrest(stored, "decrypt", "--config", config, "--etcd-key", etcdKey)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("atrest decrypt exit %d: %s", code, strings.TrimSpace(string(stderr)))
	}
	return out, nil
}

// Inspection is the part of `atrest inspect -o json` (and of an audit entry) the tier compares.
type Inspection struct {
	Key      string  `json:"key"`
	State    string  `json:"state"`
	Provider *string `json:"provider"`
	KeyName  *string `json:"key_name"`
	Readable *bool   `json:"readable"`
	Error    *string `json:"error"`
}

func (o *Options) atrestInspect(config, etcdKey string, stored []byte) (Inspection, error) {
	var in Inspection
	out, stderr, code, err := o.atrest(stored, "inspect", "--config", config, "--etcd-key", etcdKey, "-o", "json")
	if err != nil {
		return in, err
	}
	if code > 1 {
		return in, fmt.Errorf("atrest inspect exit %d: %s", code, strings.TrimSpace(string(stderr)))
	}
	if err := json.Unmarshal(out, &in); err != nil {
		return in, fmt.Errorf("atrest inspect output: %w: %s", err, out)
	}
	return in, nil
}

// KubeVerdict is what kube-apiserver's transformer says of a stored value.
type KubeVerdict struct {
	Plain []byte
	Stale bool
	Err   error
}

func (k KubeVerdict) String() string {
	switch {
	case k.Err != nil:
		return "unreadable (" + k.Err.Error() + ")"
	case k.Stale:
		return "readable, stale"
	}
	return "readable, not stale"
}

// agree says whether atrest's state for a value is kube's verdict:
//
//	kube cannot read it     ⇔ unknown-key, undecryptable, or plaintext that is not readable
//	kube reads, not stale   ⇔ current, or plaintext under an identity write provider
//	kube reads, stale       ⇔ stale, or readable plaintext under another write provider
func agree(in Inspection, writeIdentity bool, kube KubeVerdict) error {
	readable := in.Readable != nil && *in.Readable
	var fresh, ok bool
	switch in.State {
	case "current":
		ok, fresh = true, true
	case "stale":
		ok = true
	case "plaintext":
		ok, fresh = readable, readable && writeIdentity
	case "unknown-key", "undecryptable":
	default:
		return fmt.Errorf("atrest state %q is not one a config-backed read gives", in.State)
	}
	if in.Readable != nil && *in.Readable != ok {
		return fmt.Errorf("atrest says state %s but readable=%t", in.State, *in.Readable)
	}
	if ok != (kube.Err == nil) || (ok && fresh == kube.Stale) {
		return fmt.Errorf("atrest: %s (readable %v); kube-apiserver: %s", in.State, readable, kube)
	}
	return nil
}
