package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"

	"atrest.test/interop/kubecodec"
)

// Key is one named key of an aescbc, aesgcm or secretbox provider.
type Key struct {
	Name   string
	Secret []byte
}

// Provider is one element of a resources entry's providers list.
type Provider struct {
	Kind string // aescbc, aesgcm, secretbox, identity
	Keys []Key
}

// Entry is one element of the config's resources list.
type Entry struct {
	Resources []string
	Providers []Provider
}

// Config is an EncryptionConfiguration the driver writes as YAML for both sides.
type Config struct{ Entries []Entry }

// YAML renders the config the way an operator would write it (key names quoted: they may
// hold ':').
func (c Config) YAML() []byte {
	var b bytes.Buffer
	b.WriteString("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n")
	for _, e := range c.Entries {
		b.WriteString("  - resources:\n")
		for _, r := range e.Resources {
			fmt.Fprintf(&b, "      - %q\n", r)
		}
		b.WriteString("    providers:\n")
		for _, p := range e.Providers {
			if p.Kind == "identity" {
				b.WriteString("      - identity: {}\n")
				continue
			}
			fmt.Fprintf(&b, "      - %s:\n          keys:\n", p.Kind)
			for _, k := range p.Keys {
				fmt.Fprintf(&b, "            - name: %q\n              secret: %s\n", k.Name,
					base64.StdEncoding.EncodeToString(k.Secret))
			}
		}
	}
	return b.Bytes()
}

// Clone deep-copies the config (keys share their secret bytes, which are never mutated).
func (c Config) Clone() Config {
	out := Config{Entries: make([]Entry, len(c.Entries))}
	for i, e := range c.Entries {
		ne := Entry{Resources: append([]string(nil), e.Resources...)}
		for _, p := range e.Providers {
			ne.Providers = append(ne.Providers, Provider{Kind: p.Kind, Keys: append([]Key(nil), p.Keys...)})
		}
		out.Entries[i] = ne
	}
	return out
}

// EntryFor is the entry index that covers a core-group resource (exact name first, then "*."
// or "*.*", as kube-apiserver resolves it).
func (c Config) EntryFor(resource string) int {
	for i, e := range c.Entries {
		for _, r := range e.Resources {
			if r == resource {
				return i
			}
		}
	}
	for i, e := range c.Entries {
		for _, r := range e.Resources {
			if r == "*." || r == "*.*" {
				return i
			}
		}
	}
	return -1
}

// Write saves the config under dir and returns the path.
func (c Config) Write(dir, name string) (string, error) {
	path := filepath.Join(dir, name+".yaml")
	return path, os.WriteFile(path, c.YAML(), 0o600)
}

// Load writes the config and loads it with kube-apiserver's loader.
func (c Config) Load(dir, name string) (string, *kubecodec.Codec, error) {
	path, err := c.Write(dir, name)
	if err != nil {
		return "", nil, err
	}
	codec, err := kubecodec.Load(path)
	if err != nil {
		return path, nil, fmt.Errorf("kube-apiserver refuses the generated config %s: %w\n%s", path, err, c.YAML())
	}
	return path, codec, nil
}

var kinds = []string{"aescbc", "aesgcm", "secretbox"}

func keyLen(r *rand.Rand, kind string) int {
	if kind == "secretbox" {
		return 32
	}
	return []int{16, 24, 32}[r.Intn(3)]
}

var nameStyles = []func(r *rand.Rand, n int) string{
	func(r *rand.Rand, n int) string { return fmt.Sprintf("key%d", n) },
	// k3s names keys after the time of rotation: colons inside the name.
	func(r *rand.Rand, n int) string {
		return fmt.Sprintf("aescbckey-2025-%02d-%02dT19:21:%02dZ", 1+r.Intn(12), 1+r.Intn(28), n%60)
	},
	func(r *rand.Rand, n int) string { return fmt.Sprintf("k:%d:", n) },
	func(r *rand.Rand, n int) string { return fmt.Sprintf("v1:key%d", n) },
	func(r *rand.Rand, n int) string { return fmt.Sprintf("ke y %d ✓", n) },
}

// newKey makes a fresh key with a name unique in this run.
func newKey(r *rand.Rand, kind string, serial *int) Key {
	*serial++
	secret := make([]byte, keyLen(r, kind))
	r.Read(secret)
	return Key{Name: nameStyles[r.Intn(len(nameStyles))](r, *serial), Secret: secret}
}

func newProvider(r *rand.Rand, kind string, serial *int) Provider {
	p := Provider{Kind: kind}
	if kind != "identity" {
		for n := 1 + r.Intn(2); n > 0; n-- {
			p.Keys = append(p.Keys, newKey(r, kind, serial))
		}
	}
	return p
}

// The core-group resources the scenarios use, and the wildcard entries.
var coreResources = []string{"secrets", "configmaps", "widgets"}

// randomConfig makes a valid config: one to three entries over coreResources, the last one
// possibly a wildcard, each with one to three providers.
func randomConfig(r *rand.Rand, serial *int) Config {
	var c Config
	res := append([]string(nil), coreResources...)
	r.Shuffle(len(res), func(i, j int) { res[i], res[j] = res[j], res[i] })
	for len(res) > 0 {
		n := 1 + r.Intn(len(res))
		c.Entries = append(c.Entries, Entry{Resources: res[:n]})
		res = res[n:]
	}
	if r.Intn(3) == 0 {
		// The last resource is covered by a wildcard instead of by name.
		last := &c.Entries[len(c.Entries)-1]
		wild := []string{"*.", "*.*"}[r.Intn(2)]
		if len(last.Resources) == 1 {
			last.Resources = []string{wild}
		} else {
			last.Resources = last.Resources[:len(last.Resources)-1]
			c.Entries = append(c.Entries, Entry{Resources: []string{wild}})
		}
	}
	for i := range c.Entries {
		perm := r.Perm(len(kinds))
		for j := 0; j < 1+r.Intn(3) && j < len(perm); j++ {
			c.Entries[i].Providers = append(c.Entries[i].Providers, newProvider(r, kinds[perm[j]], serial))
		}
		if r.Intn(2) == 0 {
			// identity somewhere: first (nothing encrypted yet) or last (reads old plaintext).
			id := Provider{Kind: "identity"}
			if r.Intn(3) == 0 {
				c.Entries[i].Providers = append([]Provider{id}, c.Entries[i].Providers...)
			} else {
				c.Entries[i].Providers = append(c.Entries[i].Providers, id)
			}
		}
	}
	return c
}

// rotate applies one random rotation step to one entry and says what it did.
func rotate(r *rand.Rand, c *Config, serial *int) string {
	ei := r.Intn(len(c.Entries))
	e := &c.Entries[ei]
	first := &e.Providers[0]
	switch op := r.Intn(7); {
	case op == 0 && first.Kind != "identity":
		// add: a new key read-only at the end of the write provider's keys.
		first.Keys = append(first.Keys, newKey(r, first.Kind, serial))
		return fmt.Sprintf("entry %d: add key %q to %s", ei, first.Keys[len(first.Keys)-1].Name, first.Kind)
	case op == 1 && first.Kind != "identity" && len(first.Keys) > 1:
		// promote: the last key becomes the write key.
		k := first.Keys[len(first.Keys)-1]
		first.Keys = append([]Key{k}, first.Keys[:len(first.Keys)-1]...)
		return fmt.Sprintf("entry %d: promote key %q", ei, k.Name)
	case op == 2 && len(e.Providers) > 1:
		// switch: the second provider becomes the write provider.
		e.Providers[0], e.Providers[1] = e.Providers[1], e.Providers[0]
		return fmt.Sprintf("entry %d: write with %s", ei, e.Providers[0].Kind)
	case op == 3:
		// a new provider read-only at the end, or a new write provider.
		kind := kinds[r.Intn(len(kinds))]
		p := newProvider(r, kind, serial)
		if r.Intn(2) == 0 {
			e.Providers = append([]Provider{p}, e.Providers...)
			return fmt.Sprintf("entry %d: new write provider %s", ei, kind)
		}
		e.Providers = append(e.Providers, p)
		return fmt.Sprintf("entry %d: new read provider %s", ei, kind)
	case op == 4 && len(e.Providers) > 1:
		// prune: drop a read provider (values it wrote become unreadable).
		i := 1 + r.Intn(len(e.Providers)-1)
		dropped := e.Providers[i]
		e.Providers = append(e.Providers[:i:i], e.Providers[i+1:]...)
		return fmt.Sprintf("entry %d: prune provider %s", ei, dropped.Kind)
	case op == 5 && first.Kind != "identity" && len(first.Keys) > 1:
		// prune a key that is not the write key (often the one promote replaced).
		i := 1 + r.Intn(len(first.Keys)-1)
		dropped := first.Keys[i]
		first.Keys = append(first.Keys[:i:i], first.Keys[i+1:]...)
		return fmt.Sprintf("entry %d: prune key %q", ei, dropped.Name)
	case op == 6:
		// decrypt everything: identity becomes the write provider (or stops being one).
		if first.Kind == "identity" && len(e.Providers) > 1 {
			e.Providers = append(e.Providers[1:], e.Providers[0])
			return fmt.Sprintf("entry %d: identity moved last", ei)
		}
		for i, p := range e.Providers {
			if p.Kind == "identity" {
				e.Providers = append(e.Providers[:i:i], e.Providers[i+1:]...)
				break
			}
		}
		e.Providers = append([]Provider{{Kind: "identity"}}, e.Providers...)
		return fmt.Sprintf("entry %d: identity first", ei)
	}
	return "no change"
}

// randomPlaintext makes a value of a length that matters to the ciphers (empty, around block
// sizes, larger), sometimes shaped like kube's protobuf envelope.
func randomPlaintext(r *rand.Rand) []byte {
	lengths := []int{0, 1, 15, 16, 17, 31, 32, 33, 100, 4096, 20000}
	b := make([]byte, lengths[r.Intn(len(lengths))])
	r.Read(b)
	if len(b) > 4 && r.Intn(2) == 0 {
		copy(b, "k8s\x00")
	}
	return b
}

func describe(c Config) string {
	var parts []string
	for _, e := range c.Entries {
		var ps []string
		for _, p := range e.Providers {
			var names []string
			for _, k := range p.Keys {
				names = append(names, fmt.Sprintf("%q/%d", k.Name, len(k.Secret)))
			}
			ps = append(ps, p.Kind+"("+strings.Join(names, ",")+")")
		}
		parts = append(parts, strings.Join(e.Resources, ",")+": "+strings.Join(ps, " "))
	}
	return strings.Join(parts, "; ")
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
