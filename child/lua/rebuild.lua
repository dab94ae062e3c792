#!lua name=globalreplica_rebuild
-- Region rebuild (child/rebuild.go): a library of its own, loaded beside
-- the engine's, that copies user keys between regions with DUMP/RESTORE.
-- Each user key K is copied with all its Redis keys in one atomic call, so
-- that a key's visible value and its CRDT state never disagree: the slots
-- are K in db 0 and 'k:'..K, 'h:'..K, 's:'..K, 'z:'..K, 'x:'..K in db 1
-- (docs/storage.md). Every slot is a DUMP payload ('' when the key does not
-- exist) and its absolute deadline in ms (PEXPIRETIME: -1 none, -2 absent).

local SLOTS = {{0, ''}, {1, 'k:'}, {1, 'h:'}, {1, 's:'}, {1, 'z:'}, {1, 'x:'}}

local cur
local function db(n)
  if cur ~= n then redis.call('SELECT', n); cur = n end
end

local function dump_key(out, name)
  out[#out + 1] = name
  for _, s in ipairs(SLOTS) do
    db(s[1])
    local k = s[2] .. name
    local d = redis.call('DUMP', k)
    if d then
      out[#out + 1] = d
      out[#out + 1] = redis.call('PEXPIRETIME', k)
    else
      out[#out + 1] = ''
      out[#out + 1] = -2
    end
  end
end

-- a live string whose state record carries a removal context (it was
-- deleted or overwritten before): phase 2 copies these again, so that a
-- string revived during phase 0 is not missed with its tombstone
local function has_removals(raw)
  local ok, a = pcall(cmsgpack.unpack, raw)
  return ok and type(a) == 'table' and type(a[4]) == 'table' and next(a[4]) ~= nil
end

-- gr_export: FCALL gr_export 0 phase cursor count
--   phase 0: the user keys of db 0; phase 1: the user keys named by the
--   state keys of db 1 (tombstones included); phase 2: the live strings of
--   db 0 with a removal context.
-- Returns {next cursor, name, (dump, pexpiretime) x 6, name, ...}.
local function gr_export(_, argv)
  cur = nil
  local phase, cursor, count = tonumber(argv[1]), argv[2], argv[3]
  local res
  if phase == 1 then
    db(1)
    res = redis.call('SCAN', cursor, 'MATCH', '[khszx]:*', 'COUNT', count)
  elseif phase == 2 then
    db(0)
    res = redis.call('SCAN', cursor, 'COUNT', count, 'TYPE', 'string')
  else
    db(0)
    res = redis.call('SCAN', cursor, 'COUNT', count)
  end
  local names, seen = {}, {}
  for _, k in ipairs(res[2]) do
    local n = k
    if phase == 1 then n = string.sub(k, 3) end
    if not seen[n] then
      seen[n] = true
      if phase ~= 2 or has_removals(redis.call('GET', k)) then names[#names + 1] = n end
    end
  end
  local out = {res[1]}
  for _, n in ipairs(names) do dump_key(out, n) end
  return out
end

-- gr_import: FCALL gr_import 0 name (dump, pexpiretime) x 6 ...
-- Replaces every slot of each key with the given copy (RESTORE REPLACE
-- with the absolute deadline, or DEL for an absent slot), one key after
-- the other in this one atomic call. Returns the number of keys.
local function gr_import(_, argv)
  cur = nil
  local n = 0
  local i = 1
  while i <= #argv do
    local name = argv[i]
    i = i + 1
    for _, s in ipairs(SLOTS) do
      db(s[1])
      local k = s[2] .. name
      local d, t = argv[i], tonumber(argv[i + 1])
      i = i + 2
      if d == '' then
        redis.call('DEL', k)
      elseif t and t > 0 then
        redis.call('RESTORE', k, t, d, 'REPLACE', 'ABSTTL')
      else
        redis.call('RESTORE', k, 0, d, 'REPLACE')
      end
    end
    n = n + 1
  end
  return n
end

redis.register_function('gr_export', gr_export)
redis.register_function('gr_import', gr_import)
