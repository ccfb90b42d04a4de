// Command interop is the interop tier's driver: it holds the built atrest binary against
// kube-apiserver's own encryption code (package kubecodec, k8s.io/apiserver) and against real
// etcd servers of several versions, prints one line per test and ends with "N passed, M failed".
//
// Run it through tests/interop/run, which builds everything and passes the flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

type etcdFlag []string

func (e *etcdFlag) String() string     { return strings.Join(*e, ",") }
func (e *etcdFlag) Set(v string) error { *e = append(*e, v); return nil }

// Options are the driver's inputs.
type Options struct {
	Atrest  string   // the atrest binary
	Etcdctl string   // an etcdctl binary (snapshot save)
	Repo    string   // the repository root (test data)
	Etcds   []string // NAME=PATH of each etcd server binary to run the live tests against
	Seed    int64
	Rounds  int
	Verbose bool
	tmp     string
}

type result struct {
	name string
	err  error
}

// Suite collects results.
type Suite struct {
	opts    Options
	results []result
}

// Run runs one named test; a panic is a failure, not a crash of the tier.
func (s *Suite) Run(name string, fn func() error) {
	start := time.Now()
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		return fn()
	}()
	var pending errPending
	if errors.As(err, &pending) {
		fmt.Printf("PENDING %s (not counted): %s\n", name, pending.reason)
		return
	}
	s.results = append(s.results, result{name, err})
	if err != nil {
		fmt.Printf("FAIL %s (%.1fs)\n     %s\n", name, time.Since(start).Seconds(),
			strings.ReplaceAll(err.Error(), "\n", "\n     "))
	} else {
		fmt.Printf("ok   %s (%.1fs)\n", name, time.Since(start).Seconds())
	}
}

func main() {
	var o Options
	var etcds etcdFlag
	flag.StringVar(&o.Atrest, "atrest", "", "the atrest binary (cargo build output)")
	flag.StringVar(&o.Etcdctl, "etcdctl", "etcdctl", "etcdctl binary (snapshot save)")
	flag.StringVar(&o.Repo, "repo", ".", "repository root")
	flag.Var(&etcds, "etcd", "NAME=PATH of an etcd server binary (repeatable)")
	flag.Int64Var(&o.Seed, "seed", 0, "seed of the randomised configs (0: from the clock)")
	flag.IntVar(&o.Rounds, "rounds", 8, "randomised rotation scenarios")
	flag.BoolVar(&o.Verbose, "v", false, "print each scenario's steps")
	flag.Parse()
	// The KMS plugin probes of kube's loader log through klog; the tier reports for itself.
	klog.SetLogger(logr.Discard())
	o.Etcds = etcds
	if o.Seed == 0 {
		o.Seed = time.Now().UnixNano() % 1_000_000_007
	}
	if o.Atrest == "" {
		fmt.Fprintln(os.Stderr, "interop: -atrest PATH is required")
		os.Exit(2)
	}
	// Config paths are relative to the repository (kube's and atrest's messages quote them).
	if err := os.Chdir(o.Repo); err != nil {
		fmt.Fprintln(os.Stderr, "interop: -repo:", err)
		os.Exit(2)
	}
	tmp, err := os.MkdirTemp("", "atrest-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop: temp dir:", err)
		os.Exit(2)
	}
	defer os.RemoveAll(tmp)
	o.tmp = tmp
	fmt.Printf("seed %d (rerun with: bash tests/interop/run -seed %d)\n", o.Seed, o.Seed)

	s := &Suite{opts: o}
	configParity(s)
	providerRoundTrips(s, rand.New(rand.NewSource(o.Seed)))
	scenarios := rotationScenarios(s, rand.New(rand.NewSource(o.Seed+1)))
	kmsTests(s, rand.New(rand.NewSource(o.Seed+2)))
	for _, e := range o.Etcds {
		name, path, ok := strings.Cut(e, "=")
		if !ok {
			path, name = e, filepath.Base(e)
		}
		liveTests(s, name, path, scenarios)
	}

	failed := 0
	for _, r := range s.results {
		if r.err != nil {
			failed++
		}
	}
	if failed > 0 {
		fmt.Println("\nfailed:")
		for _, r := range s.results {
			if r.err != nil {
				fmt.Println("  " + r.name)
			}
		}
		fmt.Printf("seed %d\n", o.Seed)
	}
	fmt.Printf("%d passed, %d failed\n", len(s.results)-failed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}
