//go:build tools

// Package tools pins kube-apiserver's main package in this module's graph, so that go.sum holds
// every module its build needs.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
