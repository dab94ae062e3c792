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
-- ready for local writes (see gr_write). A mark is refused (-1) while a
-- rebuild holds the Redis (meta.rebuild, child.BeginRebuild): a check made
-- before the rebuild began must not make the Redis writable in its middle.
local function gr_ready(_, argv)
  begin_call()
  db(1)
  if argv[1] == 'mark' then
    if rcall('HEXISTS', 'meta', 'rebuild') == 1 then return -1 end
    rcall('HSET', 'meta', 'ready', run_id())
  end
  if rcall('HGET', 'meta', 'ready') == run_id() then return 1 end
  return 0
end

-- gr_trim: FCALL gr_trim 0 upto -> removes from the head of the op log the
-- ops whose sequence is at most upto (the last one the stream acknowledged)
-- and returns how many. It trims by sequence, not by count: if the log was
-- replaced meanwhile (a wipe, a failover), the ops now at its head are not
-- the ones that were shipped and stay.
local function gr_trim(_, argv)
  begin_call()
  db(1)
  local upto = tonumber(argv[1])
  local k = 0
  while true do
    local head = rcall('LRANGE', 'log', k, k + 99)
    if #head == 0 then break end
    for _, raw in ipairs(head) do
      if mp_unpack(raw)[3] > upto then
        if k > 0 then rcall('LTRIM', 'log', k, -1) end
        return k
      end
      k = k + 1
    end
  end
  if k > 0 then rcall('LTRIM', 'log', k, -1) end
  return k
end

redis.register_function('gr_ready', gr_ready)
redis.register_function('gr_trim', gr_trim)
redis.register_function('gr_write', gr_write)
redis.register_function('gr_apply', gr_apply)
redis.register_function('gr_lease', gr_lease)
redis.register_function('gr_restore', gr_restore)
redis.register_function('gr_gc', gr_gc)
