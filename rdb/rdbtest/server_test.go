package rdbtest

import (
	"testing"
	"time"
)

func TestServerRestartKeepsAOF(t *testing.T) {
	s := NewServer(t, "--appendonly", "yes", "--appendfsync", "always")
	s.Do("SET", "k", "v")
	s.Restart(100 * time.Millisecond)
	if v := s.Do("GET", "k"); v != "v" {
		t.Fatalf("after restart GET k = %v", v)
	}
}
