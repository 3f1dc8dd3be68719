package apperr_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/riverhub/riverhub/internal/apperr"
)

func TestConstructors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		err      *apperr.Error
		wantKind apperr.Kind
		wantCode string
		wantMsg  string
	}{
		{"Invalidf", apperr.Invalidf("field %q must be %s", "workflow", "a string"), apperr.Invalid, "invalid_request", `field "workflow" must be a string`},
		{"NotFoundf", apperr.NotFoundf("webhook %q not found", "wh_1"), apperr.NotFound, "not_found", `webhook "wh_1" not found`},
		{"New", apperr.New(apperr.Conflict, "workflow_exists", "a workflow named %q already exists", "w"), apperr.Conflict, "workflow_exists", `a workflow named "w" already exists`},
		{"New applies format verbs", apperr.New(apperr.Invalid, "x", "100%% sure"), apperr.Invalid, "x", "100% sure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err.Kind != tt.wantKind || tt.err.Code != tt.wantCode || tt.err.Message != tt.wantMsg {
				t.Errorf("got %+v, want kind %d code %q message %q", tt.err, tt.wantKind, tt.wantCode, tt.wantMsg)
			}
			if got, want := tt.err.Error(), tt.wantCode+": "+tt.wantMsg; got != want {
				t.Errorf("Error() = %q, want %q", got, want)
			}
		})
	}
}

func TestAs(t *testing.T) {
	t.Parallel()
	base := apperr.New(apperr.Conflict, "output_in_use", "in use")
	tests := []struct {
		name string
		err  error
		want *apperr.Error
	}{
		{"direct", base, base},
		{"wrapped once", fmt.Errorf("delete: %w", base), base},
		{"wrapped twice", fmt.Errorf("handler: %w", fmt.Errorf("delete: %w", base)), base},
		{"joined", errors.Join(errors.New("other"), base), base},
		{"plain error", errors.New("redis: connection refused"), nil},
		{"nil", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := apperr.As(tt.err); got != tt.want {
				t.Errorf("As(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
