//go:build unix

package main

import "syscall"

// openFileLimit is this process's soft RLIMIT_NOFILE (which the Go runtime
// has already raised to the hard limit).
func openFileLimit() (uint64, bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, false
	}
	return uint64(r.Cur), true
}
