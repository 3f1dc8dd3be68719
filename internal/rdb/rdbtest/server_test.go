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

func TestServerShutdownKeepsAOF(t *testing.T) {
	s := NewServer(t, "--appendonly", "yes", "--appendfsync", "everysec")
	s.Do("SET", "k", "v")
	s.Shutdown()
	s.Shutdown() // safe when stopped
	s.Start()
	if v := s.Do("GET", "k"); v != "v" {
		t.Fatalf("after shutdown and start GET k = %v", v)
	}
}
