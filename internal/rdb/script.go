package rdb

import (
	"io/fs"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Script loads the Lua script lua/<name>.lua from fsys (a package's
// embedded scripts), or several of them joined in order (helpers first).
// A missing script is a build mistake, so it panics at package
// initialisation rather than at the first call.
//
// Comment lines and indentation are dropped: a script is sent whole
// (EVAL) on its first use and whenever Redis has lost it (a restart or a
// failover), and Redis hashes what it receives each time.
func Script(fsys fs.FS, names ...string) *redis.Script {
	return Named(NewScript(Source(fsys, names...)), strings.Join(names, "+"))
}

// NewScript is redis.NewScript for a script known from the start: the
// scripts made with it are those a new connection's Redis is given
// (loadScripts), with those this process has sent by hash since.
func NewScript(src string) *redis.Script {
	shaOf(src)
	return redis.NewScript(src)
}

// Source is the source Script makes of the files names: each compacted,
// one after the other.
func Source(fsys fs.FS, names ...string) string {
	var b strings.Builder
	for _, name := range names {
		src, err := fs.ReadFile(fsys, "lua/"+name+".lua")
		if err != nil {
			panic(err)
		}
		b.WriteString(Compact(string(src)))
	}
	return b.String()
}

var (
	namesMu sync.Mutex
	names   = map[string]string{} // a script's SHA1 → its name
)

// Named records s under name, for ScriptName, and returns it (a name
// given later replaces one given before). Script names its scripts by
// their files ("tl+complete"); a package names its own with its name
// before them ("channels/tl+complete").
func Named(s *redis.Script, name string) *redis.Script {
	namesMu.Lock()
	defer namesMu.Unlock()
	names[s.Hash()] = name
	return s
}

// ScriptName is the name of the script whose SHA1 is sha (as EVALSHA and
// SLOWLOG show it), among those of the packages linked in; "" if none.
func ScriptName(sha string) string {
	namesMu.Lock()
	defer namesMu.Unlock()
	return names[sha]
}

// Compact drops a Lua source's comment lines, blank lines and indentation.
// The scripts here hold no multi-line strings, whose contents it would
// change.
func Compact(src string) string {
	var b strings.Builder
	for line := range strings.Lines(src) {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		b.WriteString(t)
		b.WriteByte('\n')
	}
	return b.String()
}
