// Package apperr is riverhub's application error: a kind that decides the
// HTTP status, a stable machine code and a message safe to show a client.
// Internal errors never carry their text to a client; the server logs them
// and answers "internal".
package apperr

import (
	"errors"
	"fmt"
)

// Kind groups codes that share an HTTP status. The server maps each kind to
// one status in one place.
type Kind int

const (
	Internal Kind = iota
	Invalid
	Unauthorized
	Forbidden
	NotFound
	Conflict
	TooLarge
	RateLimited
	Unavailable
)

// Error is an application error with a code and a client-safe message.
type Error struct {
	Kind    Kind
	Code    string // e.g. "invalid_request", "not_found", "workflow_exists"
	Message string
	// RetryAfter is a hint in seconds for RateLimited and Unavailable.
	RetryAfter int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// New returns an *Error; the message is formatted with fmt.Sprintf.
func New(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalidf is the common 400 invalid_request.
func Invalidf(format string, args ...any) *Error {
	return New(Invalid, "invalid_request", format, args...)
}

// NotFoundf is the common 404 not_found. Another project's objects answer
// this too, so ids cannot be probed across projects.
func NotFoundf(format string, args ...any) *Error {
	return New(NotFound, "not_found", format, args...)
}

// As returns the *Error in err's chain, or nil.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
