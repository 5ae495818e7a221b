//go:build tools

// Package tools pins Argo CD's single binary (the component is chosen by the name it is
// called under or ARGOCD_BINARY_NAME), built from the module proxy.
package tools

import (
	_ "github.com/argoproj/argo-cd/v3/cmd"
)
