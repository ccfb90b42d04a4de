package main

import (
	"bytes"
	"fmt"
	"math/rand"
	"sort"
	"strings"

	"atrest.test/interop/kubecodec"
)

// Value is one stored value of a scenario.
type Value struct {
	Key    string // full etcd key
	Res    string // core-group resource
	Plain  []byte
	Stored []byte
	Writer string // "kube" or "atrest", and the step
}

// Scenario is one randomised rotation: its final config and every value written on the way.
type Scenario struct {
	Name   string
	Root   string // the etcd prefix root ("/interop-3"), as kube-apiserver's --etcd-prefix
	Config Config
	Values []*Value
}

func writeIdentity(c Config, res string) bool {
	i := c.EntryFor(res)
	return i >= 0 && c.Entries[i].Providers[0].Kind == "identity"
}

// providerRoundTrips: for each provider as the write provider, values atrest encrypts are
// read by kube-apiserver's transformer to the same bytes and not stale, and values kube
// encrypts are decrypted by atrest to the same bytes and classified current.
func providerRoundTrips(s *Suite, r *rand.Rand) {
	o := &s.opts
	for _, kind := range []string{"aescbc", "aesgcm", "secretbox", "identity"} {
		s.Run("roundtrip/"+kind, func() error {
			serial := 0
			for round := 0; round < 3; round++ {
				cfg := randomConfig(r, &serial)
				for i := range cfg.Entries {
					cfg.Entries[i].Providers = append([]Provider{newProvider(r, kind, &serial)}, cfg.Entries[i].Providers...)
				}
				path, codec, err := cfg.Load(o.tmp, fmt.Sprintf("roundtrip-%s-%d", kind, round))
				if err != nil {
					return err
				}
				defer codec.Close()
				for _, res := range coreResources {
					for n := 0; n < 3; n++ {
						if err := roundTrip(o, codec, path, cfg, res, fmt.Sprintf("/registry/%s/ns-%d/v%d", res, round, n), randomPlaintext(r), kind); err != nil {
							return fmt.Errorf("%w\nconfig: %s", err, describe(cfg))
						}
					}
				}
			}
			return nil
		})
	}
}

func roundTrip(o *Options, codec *kubecodec.Codec, path string, cfg Config, res, key string, plain []byte, kind string) error {
	gr := kubecodec.ParseGroupResource(res)
	// atrest writes, kube reads.
	stored, err := o.atrestEncrypt(path, key, plain)
	if err != nil {
		return err
	}
	first := cfg.Entries[cfg.EntryFor(res)].Providers[0]
	if kind == "identity" {
		if !bytes.Equal(stored, plain) {
			return fmt.Errorf("%s: atrest's identity write changed the bytes", key)
		}
	} else if want := fmt.Sprintf("k8s:enc:%s:v1:%s:", kind, first.Keys[0].Name); !bytes.HasPrefix(stored, []byte(want)) {
		return fmt.Errorf("%s: atrest wrote %q…, want the prefix %q", key, head(stored), want)
	}
	got, stale, err := codec.Decrypt(gr, key, stored)
	if err != nil {
		return fmt.Errorf("%s: kube-apiserver cannot read what atrest wrote (%d bytes of plaintext): %w", key, len(plain), err)
	}
	if !bytes.Equal(got, plain) {
		return fmt.Errorf("%s: kube-apiserver reads other bytes than atrest encrypted", key)
	}
	if stale {
		return fmt.Errorf("%s: kube-apiserver calls atrest's fresh write stale", key)
	}
	// kube writes, atrest reads and calls it current.
	kstored, err := codec.Encrypt(gr, key, plain)
	if err != nil {
		return fmt.Errorf("%s: kube-apiserver encrypt: %w", key, err)
	}
	back, err := o.atrestDecrypt(path, key, kstored)
	if err != nil {
		return err
	}
	if !bytes.Equal(back, plain) {
		return fmt.Errorf("%s: atrest decrypts kube-apiserver's value to other bytes", key)
	}
	in, err := o.atrestInspect(path, key, kstored)
	if err != nil {
		return err
	}
	return agree(in, kind == "identity", KubeVerdict{Plain: plain})
}

func head(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

// rotationScenarios: randomised configs rotated step by step; at each step kube-apiserver and
// atrest write values with the current config, then every value written so far is judged by
// both: atrest's state must be kube's verdict, and where kube reads a value, atrest reads the
// same bytes. The final configs and values feed the live tests.
func rotationScenarios(s *Suite, r *rand.Rand) []*Scenario {
	o := &s.opts
	var out []*Scenario
	for round := 0; round < o.Rounds; round++ {
		sc := &Scenario{Name: fmt.Sprintf("scenario-%d", round), Root: fmt.Sprintf("/interop-%d", round)}
		s.Run("verdicts/"+sc.Name, func() error {
			serial := 0
			cfg := randomConfig(r, &serial)
			var log []string
			for step := 0; step < 5; step++ {
				if step > 0 {
					log = append(log, rotate(r, &cfg, &serial))
				}
				log = append(log, "config: "+describe(cfg))
				path, codec, err := cfg.Load(o.tmp, fmt.Sprintf("%s-%d", sc.Name, step))
				if err != nil {
					return err
				}
				err = scenarioStep(o, r, sc, cfg, path, codec, step)
				codec.Close()
				if err != nil {
					return fmt.Errorf("step %d: %w\nsteps:\n  %s", step, err, strings.Join(log, "\n  "))
				}
			}
			if o.Verbose {
				fmt.Println("  " + strings.Join(log, "\n  "))
			}
			sc.Config = cfg
			out = append(out, sc)
			return nil
		})
	}
	var seen []string
	for k, n := range statesSeen {
		seen = append(seen, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(seen)
	fmt.Printf("     judged (atrest/kube): %s\n", strings.Join(seen, ", "))
	return out
}

func scenarioStep(o *Options, r *rand.Rand, sc *Scenario, cfg Config, path string, codec *kubecodec.Codec, step int) error {
	for _, res := range coreResources {
		for n := 0; n < 2; n++ {
			v := &Value{
				Key:   fmt.Sprintf("%s/%s/ns-%d/v%d", sc.Root, res, step, n),
				Res:   res,
				Plain: randomPlaintext(r),
			}
			var err error
			if n == 0 {
				v.Writer = fmt.Sprintf("kube at step %d", step)
				v.Stored, err = codec.Encrypt(kubecodec.ParseGroupResource(res), v.Key, v.Plain)
			} else {
				v.Writer = fmt.Sprintf("atrest at step %d", step)
				v.Stored, err = o.atrestEncrypt(path, v.Key, v.Plain)
			}
			if err != nil {
				return fmt.Errorf("%s: %s: %w", v.Key, v.Writer, err)
			}
			sc.Values = append(sc.Values, v)
		}
	}
	// Damaged and displaced values: one earlier value copied under another key (aesgcm binds
	// the key, the others do not) and one cut short by a byte.
	if prev := sc.Values[r.Intn(len(sc.Values))]; len(prev.Stored) > 0 {
		sc.Values = append(sc.Values,
			&Value{Key: fmt.Sprintf("%s/%s/ns-%d/moved", sc.Root, prev.Res, step), Res: prev.Res,
				Plain: prev.Plain, Stored: prev.Stored, Writer: prev.Writer + ", moved"},
			&Value{Key: fmt.Sprintf("%s/%s/ns-%d/cut", sc.Root, prev.Res, step), Res: prev.Res,
				Plain: prev.Plain[:max(len(prev.Plain)-1, 0)], Stored: prev.Stored[:len(prev.Stored)-1],
				Writer: prev.Writer + ", cut short"})
	}
	for _, v := range sc.Values {
		if err := judge(o, codec, path, cfg, v, v.Stored); err != nil {
			return err
		}
	}
	return nil
}

// judge compares atrest's reading of one stored value with kube-apiserver's.
func judge(o *Options, codec *kubecodec.Codec, path string, cfg Config, v *Value, stored []byte) error {
	plain, stale, kerr := codec.Decrypt(kubecodec.ParseGroupResource(v.Res), v.Key, stored)
	kube := KubeVerdict{Plain: plain, Stale: stale, Err: kerr}
	in, err := o.atrestInspect(path, v.Key, stored)
	if err != nil {
		return err
	}
	statesSeen[in.State+kubeSuffix(kube)]++
	if err := agree(in, writeIdentity(cfg, v.Res), kube); err != nil {
		return fmt.Errorf("%s (written by %s, %q…): %w", v.Key, v.Writer, head(stored), err)
	}
	if kerr != nil {
		return nil
	}
	if !bytes.Equal(plain, v.Plain) {
		return fmt.Errorf("%s: kube-apiserver reads other bytes than were written", v.Key)
	}
	back, err := o.atrestDecrypt(path, v.Key, stored)
	if err != nil {
		return fmt.Errorf("%s (written by %s): kube-apiserver reads it, atrest does not: %w", v.Key, v.Writer, err)
	}
	if !bytes.Equal(back, plain) {
		return fmt.Errorf("%s: atrest decrypts to other bytes than kube-apiserver", v.Key)
	}
	return nil
}

// statesSeen counts the (atrest state, kube verdict) pairs the scenarios met, printed after
// them so that a run shows it covered stale, unreadable and plaintext values, not only current.
var statesSeen = map[string]int{}

func kubeSuffix(k KubeVerdict) string {
	switch {
	case k.Err != nil:
		return "/kube-unreadable"
	case k.Stale:
		return "/kube-stale"
	}
	return "/kube-fresh"
}
