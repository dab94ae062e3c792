-- gr_lease grants or extends a named lease to one owner: FCALL gr_lease 0
-- name owner ttl_ms -> 1 if owner holds it now.
local function gr_lease(_, argv)
  begin_call()
  db(1)
  local k = 'lease:' .. argv[1]
  local cur = rcall('GET', k)
  if cur and cur ~= argv[2] then return 0 end
  rcall('SET', k, argv[2], 'PX', argv[3])
  return 1
end

-- gr_ready: FCALL gr_ready 0 mark|check -> 1 if this Redis process is marked
-- ready for local writes (see gr_write).
local function gr_ready(_, argv)
  begin_call()
  db(1)
  if argv[1] == 'mark' then rcall('HSET', 'meta', 'ready', run_id()) end
  if rcall('HGET', 'meta', 'ready') == run_id() then return 1 end
  return 0
end

redis.register_function('gr_ready', gr_ready)
redis.register_function('gr_write', gr_write)
redis.register_function('gr_apply', gr_apply)
redis.register_function('gr_lease', gr_lease)
redis.register_function('gr_restore', gr_restore)
redis.register_function('gr_gc', gr_gc)
