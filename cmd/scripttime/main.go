// Command scripttime tells where a Redis spent its command time, per
// command and per riverhub script, from its SLOWLOG: run a benchmark
// against a Redis of its own that logs every command, then read it.
//
//	redis-server --port 6390 --daemonize yes --save "" --appendonly no \
//	    --slowlog-log-slower-than 0 --slowlog-max-len 2000000
//	REDIS_URL=redis://127.0.0.1:6390/0 /tmp/e2e.test -test.run '^$' -test.bench '^BenchmarkThroughput$' -test.benchtime=1x
//	go run ./cmd/scripttime -redis redis://127.0.0.1:6390/0 -per publish
//
// -per names the command whose calls count the units (a task publishes its
// final message once: "publish"), or is a number; every figure is then
// also given per unit. Scripts are named by their package and Lua files
// ("channels/tl+complete"), those of the packages linked in here; a
// script sent as its one file is named after it too ("hub/publish"), when
// the tool runs from the module's root, where it finds the files.
//
// Redis 7 logs the commands a script runs as well as the script's call,
// and the call's time includes theirs: a script's line is its whole cost,
// and its commands appear again on their own lines. The log holds the
// commands of the whole run, the benchmark's setup and cleanup included
// (a cleanup's UNLINK and SCAN lines); SLOWLOG RESET before a run.
package main

import (
	"cmp"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	_ "github.com/riverhub/riverhub/ai/limit" // their scripts, by name
	_ "github.com/riverhub/riverhub/channels"
	_ "github.com/riverhub/riverhub/dispatch"
	"github.com/riverhub/riverhub/internal/rdb"
)

func main() {
	url := flag.String("redis", "redis://127.0.0.1:6390/0", "the Redis whose SLOWLOG to read")
	per := flag.String("per", "", `the units: a command whose calls count them ("publish"), or a number; "" for none`)
	top := flag.Int("top", 30, "lines to print")
	flag.Parse()
	if err := run(*url, *per, *top); err != nil {
		fmt.Fprintln(os.Stderr, "scripttime:", err)
		os.Exit(1)
	}
}

// line is what the log holds of one command (or script).
type line struct {
	name  string
	calls int64
	usec  int64
}

func run(url, per string, top int) error {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx := context.Background()
	log, err := c.SlowLogGet(ctx, -1).Result()
	if err != nil {
		return err
	}
	files := fileScripts()
	by := map[string]*line{}
	for _, e := range log {
		if len(e.Args) == 0 {
			continue
		}
		name := strings.ToLower(e.Args[0])
		if name == "slowlog" { // an earlier read of the log
			continue
		}
		if (name == "evalsha" || name == "evalsha_ro") && len(e.Args) > 1 {
			if n := rdb.ScriptName(e.Args[1]); n != "" {
				name += " " + n
			} else if n := files[e.Args[1]]; n != "" {
				name += " " + n
			} else {
				name += " " + e.Args[1][:min(8, len(e.Args[1]))]
			}
		}
		l := by[name]
		if l == nil {
			l = &line{name: name}
			by[name] = l
		}
		l.calls++
		l.usec += e.Duration.Microseconds()
	}
	units := 0.0
	switch n, err := strconv.ParseFloat(per, 64); {
	case per == "":
	case err == nil:
		units = n
	default:
		if l := by[strings.ToLower(per)]; l != nil {
			units = float64(l.calls)
		}
		if units == 0 {
			return fmt.Errorf("-per %s: no such command in the log", per)
		}
	}
	lines := make([]*line, 0, len(by))
	for _, l := range by {
		lines = append(lines, l)
	}
	slices.SortFunc(lines, func(a, b *line) int { return cmp.Compare(b.usec, a.usec) })
	// (A script's commands are on its line too, so the lines do not add up.)
	fmt.Printf("%d commands logged (at most slowlog-max-len)", len(log))
	if units > 0 {
		fmt.Printf(", %.0f units", units)
	}
	fmt.Println()
	fmt.Printf("%-48s %10s %10s", "command", "calls", "µs/call")
	if units > 0 {
		fmt.Printf(" %10s %10s", "calls/unit", "µs/unit")
	}
	fmt.Println()
	for _, l := range lines[:min(top, len(lines))] {
		fmt.Printf("%-48s %10d %10.1f", l.name, l.calls, float64(l.usec)/float64(l.calls))
		if units > 0 {
			fmt.Printf(" %10.3f %10.2f", float64(l.calls)/units, float64(l.usec)/units)
		}
		fmt.Println()
	}
	return nil
}

// fileScripts names the scripts that are one Lua file of a package, sent
// as it is or compacted (rdb.Compact), by the SHA1 of each: those found
// under the working directory, as <package>/<file>.
func fileScripts() map[string]string {
	names := map[string]string{}
	for _, pattern := range []string{"*/lua/*.lua", "*/*/lua/*.lua"} {
		paths, _ := filepath.Glob(pattern)
		for _, path := range paths {
			src, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			pkg := filepath.Base(filepath.Dir(filepath.Dir(path)))
			name := pkg + "/" + strings.TrimSuffix(filepath.Base(path), ".lua")
			for _, s := range []string{string(src), rdb.Compact(string(src))} {
				sum := sha1.Sum([]byte(s))
				names[hex.EncodeToString(sum[:])] = name
			}
		}
	}
	return names
}
