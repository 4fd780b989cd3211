//go:build tools

// Package monitoring keeps the prometheus-operator's API module in go.mod: crds.sh generates the
// operator's CRDs from its types with controller-gen, as the operator itself does.
package monitoring

import _ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
