// Command kubecodec runs kube-apiserver's encryption-at-rest code on one config and one value:
//
//	kubecodec check   --config FILE                       exit 0 if kube-apiserver loads it, else 2 + its error
//	kubecodec decrypt --config FILE --etcd-key KEY [--resource GR] < stored > plaintext   (stderr: stale=true|false)
//	kubecodec encrypt --config FILE --etcd-key KEY [--resource GR] < plaintext > stored
//
// --resource defaults to the resource named by the etcd key (/registry/<resource>/…, core group).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"atrest.test/interop/kubecodec"
)

func main() { os.Exit(run()) }

func run() int {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kubecodec check|decrypt|encrypt --config FILE [--etcd-key KEY] [--resource GR]")
		return 2
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	config := fs.String("config", "", "EncryptionConfiguration file")
	etcdKey := fs.String("etcd-key", "", "full etcd key of the value")
	resource := fs.String("resource", "", "group/resource (default: from --etcd-key)")
	if err := fs.Parse(os.Args[2:]); err != nil {
		return 2
	}
	codec, err := kubecodec.Load(*config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer codec.Close()
	if cmd == "check" {
		fmt.Println("ok", codec.Hash)
		return 0
	}
	var gr schema.GroupResource
	if *resource != "" {
		gr = kubecodec.ParseGroupResource(*resource)
	} else if gr, err = kubecodec.ResourceOfKey(*etcdKey); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading standard input:", err)
		return 2
	}
	switch cmd {
	case "decrypt":
		out, stale, err := codec.Decrypt(gr, *etcdKey, in)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "stale=%t\n", stale)
		_, err = os.Stdout.Write(out)
		return exitOf(err)
	case "encrypt":
		out, err := codec.Encrypt(gr, *etcdKey, in)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		_, err = os.Stdout.Write(out)
		return exitOf(err)
	}
	fmt.Fprintf(os.Stderr, "unknown command %q: check, decrypt or encrypt\n", cmd)
	return 2
}

func exitOf(err error) int {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
