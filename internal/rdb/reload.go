package rdb

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// reloadOnFailure makes a Cluster client read the slot map again as soon
// as a node does not answer. The client reloads it on MOVED and ASK, and
// otherwise every 60 s: a master that crashed keeps its slots in the map
// until then, so after its replica took over every command for those
// slots would still go to the dead address for up to a minute (nobody
// answers MOVED for a node that is gone). Reloads are lazy and coalesced
// by the client (one at a time, 200 ms apart), so a burst of failures
// costs a few CLUSTER SLOTS, not one each.
func reloadOnFailure(cc *redis.ClusterClient) {
	cc.OnNewNode(func(n *redis.Client) { n.AddHook(reloadHook{cc}) })
}

type reloadHook struct{ cc *redis.ClusterClient }

func (reloadHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h reloadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if Unavailable(err) {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

func (h reloadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if Unavailable(err) {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}
