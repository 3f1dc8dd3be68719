package rdb

import (
	"io/fs"

	"github.com/redis/go-redis/v9"
)

// Script loads the Lua script lua/<name>.lua from fsys (a package's
// embedded scripts). A missing script is a build mistake, so it panics at
// package initialisation rather than at the first call.
func Script(fsys fs.FS, name string) *redis.Script {
	b, err := fs.ReadFile(fsys, "lua/"+name+".lua")
	if err != nil {
		panic(err)
	}
	return redis.NewScript(string(b))
}
