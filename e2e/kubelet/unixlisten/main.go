// Command unixlisten is the kubelet lab's stand-in for a DPDK application
// in server mode: it creates a unix socket at the path given, prints
// "listening <path>", and accepts (and closes) connections until killed.
// busybox's nc has no unix sockets.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: unixlisten PATH")
		os.Exit(2)
	}
	l, err := net.Listen("unix", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "unixlisten:", err)
		os.Exit(1)
	}
	fmt.Println("listening", os.Args[1])
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "unixlisten:", err)
			os.Exit(1)
		}
		c.Close()
	}
}
