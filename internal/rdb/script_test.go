package rdb

import (
	"testing"
	"testing/fstest"
)

// A script is named by its files, found by the SHA1 that EVALSHA and
// SLOWLOG show; its source is sent without comments and indentation.
func TestScriptNamedByItsFiles(t *testing.T) {
	fsys := fstest.MapFS{
		"lua/helper.lua": {Data: []byte("-- a helper\nlocal function one()\n  return 1\nend\n")},
		"lua/main.lua":   {Data: []byte("\n  return one()\n")},
	}
	s := Script(fsys, "helper", "main")
	if got := ScriptName(s.Hash()); got != "helper+main" {
		t.Errorf("ScriptName = %q, want helper+main", got)
	}
	if got := ScriptName("0000000000000000000000000000000000000000"); got != "" {
		t.Errorf("ScriptName of an unknown SHA1 = %q, want none", got)
	}
	if got := Compact("-- a helper\nlocal function one()\n  return 1\nend\n\n  return one()\n"); got != "local function one()\nreturn 1\nend\nreturn one()\n" {
		t.Errorf("Compact = %q", got)
	}
}
