"""The serving pieces: `server` (MultiTaskServer: one frozen backbone, many task prompts, rows of
any mix of tasks in one pass), `bank` (the prompts), `batcher` (dynamic batching across callers),
`http_app` (`ept serve --http`) and `ray_app` (Ray Serve)."""
