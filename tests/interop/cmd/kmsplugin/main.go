// Command kmsplugin serves a KMS v2 plugin (k8s.io/kms/pkg/service, local AES-256-GCM KEK) on a
// unix socket until interrupted, for pointing kube-apiserver or atrest at by hand:
//
//	kmsplugin -socket /tmp/kms.sock [-key-id kek-1] [-kek-hex 64HEX]
//
// Without -kek-hex the KEK is random (values written through it die with the process).
package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"atrest.test/interop/kmsplugin"
)

func main() {
	socket := flag.String("socket", "", "unix socket path to serve on")
	keyID := flag.String("key-id", "kek-1", "the key ID Status and Encrypt report")
	kekHex := flag.String("kek-hex", "", "the 32-byte KEK in hex (default: random)")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "kmsplugin: -socket PATH is required")
		os.Exit(2)
	}
	var kek []byte
	if *kekHex != "" {
		var err error
		if kek, err = hex.DecodeString(*kekHex); err != nil || len(kek) != 32 {
			fmt.Fprintln(os.Stderr, "kmsplugin: -kek-hex must be 64 hex digits")
			os.Exit(2)
		}
	}
	p, err := kmsplugin.New(*keyID, kek)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kmsplugin:", err)
		os.Exit(1)
	}
	stop, err := kmsplugin.Serve(*socket, p)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kmsplugin:", err)
		os.Exit(1)
	}
	fmt.Println("serving KMS v2 on", *socket, "key ID", *keyID)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	stop()
	os.Remove(*socket)
}
