package rdbtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server of a test's own, on a free port, for what must
// never touch the shared one: killing it, restarting it, pausing it,
// denying commands. Its data lives in a temporary directory, so a restart
// with appendonly keeps what was written.
type Server struct {
	tb   testing.TB
	Port int
	Addr string // 127.0.0.1:port
	dir  string
	bin  string
	args []string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// NewServer starts a private redis-server with the given extra arguments
// (e.g. "--appendonly", "yes"). It skips the test when redis-server is not
// installed (serverBin). The server is stopped when the test ends.
func NewServer(tb testing.TB, args ...string) *Server {
	tb.Helper()
	bin := serverBin(tb)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return newServer(tb, bin, port, args)
}

// NewServerAt is NewServer on a given port, for tests that must keep to a
// range of ports (and those a replica or a sentinel is told about). It
// fails the test when the port is taken.
func NewServerAt(tb testing.TB, port int, args ...string) *Server {
	tb.Helper()
	bin := serverBin(tb)
	freePort(tb, port)
	return newServer(tb, bin, port, args)
}

// serverBin is the redis-server binary; without one the test is skipped,
// unless CI is set (CI has it: a missing one is a failure).
func serverBin(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatal("redis-server is not installed")
		}
		tb.Skip("redis-server is not installed")
	}
	return bin
}

// freePort fails the test when port is taken.
func freePort(tb testing.TB, port int) {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		tb.Fatalf("port %d is taken: %v", port, err)
	}
	_ = l.Close()
}

func newServer(tb testing.TB, bin string, port int, args []string) *Server {
	tb.Helper()
	s := &Server{tb: tb, Port: port, Addr: "127.0.0.1:" + strconv.Itoa(port), dir: tb.TempDir(), bin: bin}
	s.args = append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", s.dir,
		"--save", "", "--daemonize", "no", "--enable-debug-command", "local", "--logfile", filepath.Join(s.dir, "redis.log")}, args...)
	s.Start()
	tb.Cleanup(s.Kill)
	return s
}

// URL is the server's REDIS_URL.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	s.tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Start starts the server (again) and waits until it answers PING.
func (s *Server) Start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	cmd := exec.Command(s.bin, s.args...)
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("start redis-server: %v", err)
	}
	s.cmd = cmd
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.tb.Fatalf("redis-server on %s did not answer within 10s: %v\n%s", s.Addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL, as a crash would. Safe when stopped.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Shutdown stops the server gracefully, as an operator's restart would:
// SHUTDOWN writes and syncs the append-only file (when enabled) before the
// process exits, so nothing acknowledged is lost. Safe when stopped.
func (s *Server) Shutdown() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, ReadTimeout: 10 * time.Second})
	defer c.Close()
	if err := c.Shutdown(context.Background()).Err(); err != nil {
		s.tb.Fatalf("redis SHUTDOWN: %v", err)
	}
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart kills the server, waits d, and starts it again on the same port
// and data directory.
func (s *Server) Restart(d time.Duration) {
	s.tb.Helper()
	s.Kill()
	time.Sleep(d)
	s.Start()
}

// Do runs one command on the server, failing the test on an error.
func (s *Server) Do(args ...any) any {
	s.tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	v, err := c.Do(context.Background(), args...).Result()
	if err != nil {
		s.tb.Fatalf("redis %v: %v", args, err)
	}
	return v
}

// String is the server's address, for messages.
func (s *Server) String() string { return fmt.Sprintf("redis-server %s", s.Addr) }
