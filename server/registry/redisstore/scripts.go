package redisstore

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// The Lua scripts, one per mutation. Each file's header states its keys,
// arguments and reply. redis.Script runs them with EVALSHA and falls back to
// EVAL when the server lost its script cache (NOSCRIPT after a restart).
var (
	//go:embed scripts/claim.lua
	claimSrc string
	//go:embed scripts/touch.lua
	touchSrc string
	//go:embed scripts/update_info.lua
	updateInfoSrc string
	//go:embed scripts/release.lua
	releaseSrc string
	//go:embed scripts/remirror.lua
	remirrorSrc string
	//go:embed scripts/keep_node.lua
	keepNodeSrc string
	//go:embed scripts/zrem_if.lua
	zremIfSrc string
	//go:embed scripts/delete.lua
	deleteSrc string
	//go:embed scripts/preregister.lua
	preregisterSrc string
	// history.lua defines push_history for the scripts that end sessions.
	//go:embed scripts/history.lua
	historySrc string

	claimScript      = redis.NewScript(historySrc + claimSrc)
	touchScript      = redis.NewScript(touchSrc)
	updateInfoScript = redis.NewScript(updateInfoSrc)
	releaseScript    = redis.NewScript(historySrc + releaseSrc)
	remirrorScript   = redis.NewScript(remirrorSrc)
	keepNodeScript   = redis.NewScript(keepNodeSrc)
	zremIfScript     = redis.NewScript(zremIfSrc)
	deleteScript     = redis.NewScript(deleteSrc)
	preregScript     = redis.NewScript(preregisterSrc)

	allScripts = []*redis.Script{claimScript, touchScript, updateInfoScript, releaseScript, remirrorScript, keepNodeScript, zremIfScript, deleteScript, preregScript}
)
