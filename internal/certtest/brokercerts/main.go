// Command brokercerts writes a test CA and a broker key store for
// scripts/kafka's TLS listener: brokercerts DIR.
package main

import (
	"fmt"
	"os"

	"github.com/idemsink/idemsink/internal/certtest"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: brokercerts DIR")
		os.Exit(2)
	}
	if err := os.MkdirAll(os.Args[1], 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "brokercerts:", err)
		os.Exit(1)
	}
	if err := certtest.WriteBroker(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "brokercerts:", err)
		os.Exit(1)
	}
}
