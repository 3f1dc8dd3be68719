// Package web is the browser console: plain static files (HTML, CSS and
// JavaScript ES modules, no build step) embedded in the binary with go:embed
// and served under Prefix.
//
// The console is a client of the console API like any other: it keeps the
// API key in the tab's sessionStorage and sends it as a Bearer header on
// every call, never in a URL. Every response carries a strict
// Content-Security-Policy (no inline scripts or styles, connections only to
// this origin and WebSockets), nosniff and no-referrer; the scripts render
// all user data with DOM text APIs, so a payload holding markup stays text.
//
// Handler is safe for concurrent use; the files are read once at start.
package web
