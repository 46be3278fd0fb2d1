//go:build tools

// Package tools pins the etcd server command (package main at the module
// root of go.etcd.io/etcd/server/v3) for the cluster lab.
package tools

import _ "go.etcd.io/etcd/server/v3"
