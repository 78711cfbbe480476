"""Lua scripts of the Redis store: every multi-key change is one atomic script call.

Key names are built by RedisStore.key(); scripts that must reach a key derived from a record
(the conversation index) build it from the prefix passed in ARGV, so the store needs one Redis
server (not Redis Cluster), as channels-redis's own group scripts do.
"""

# Shared Lua helper: remove one question and its index entries; return its record or false.
_TAKE = """
local function take(prefix, pk)
  local qkey = prefix .. ':q:' .. pk
  local rec = redis.call('GET', qkey)
  redis.call('ZREM', prefix .. ':idx:q', pk)
  if not rec then return false end
  local r = cjson.decode(rec)
  redis.call('DEL', qkey)
  redis.call('ZREM', prefix .. ':cq:' .. r['client_id'], pk)
  redis.call('ZREM', prefix .. ':cv:' .. r['client_id'] .. ':' .. r['conversation'], pk)
  return rec
end
"""

# KEYS: q, cq, cv, idx:q, seq, conn   ARGV: record-json, p_key, expires_at, ttl_ms, max_pending, mode
# The question is stored only for a known client (mode "fail": only a connected one): returns
# {state, seq} where state is 'open', 'closed' or 'none' (seq false when not stored).
ADD_QUESTION = """
local state = 'open'
if redis.call('EXISTS', KEYS[6]) == 0 then
  state = 'none'
elseif redis.call('HEXISTS', KEYS[6], 'closed_at') == 1 then
  state = 'closed'
end
if state == 'none' or (state == 'closed' and ARGV[6] == 'fail') then return {state, false} end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return {'full', false} end
local seq = redis.call('INCR', KEYS[5])
local rec = '{"seq":' .. seq .. ',' .. string.sub(ARGV[1], 2)
redis.call('SET', KEYS[1], rec, 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], seq, ARGV[2])
redis.call('ZADD', KEYS[3], seq, ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
return {state, seq}
"""

# KEYS: cq   ARGV: prefix, p_key...
RESOLVE = (
    _TAKE
    + """
local want = {}
for i = 2, #ARGV do want[ARGV[i]] = true end
local members = redis.call('ZREVRANGE', KEYS[1], 0, -1)
for _, pk in ipairs(members) do
  if want[pk] then
    local rec = take(ARGV[1], pk)
    if rec then return rec end
    redis.call('ZREM', KEYS[1], pk)
  end
end
return false
"""
)

# KEYS: none   ARGV: prefix, p_key
TAKE = _TAKE + "\nreturn take(ARGV[1], ARGV[2])\n"

# KEYS: cq   ARGV: prefix, only_fail_fast ("1"/"0")
TAKE_CLIENT = (
    _TAKE
    + """
local out = {}
for _, pk in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local rec = redis.call('GET', ARGV[1] .. ':q:' .. pk)
  if not rec then
    redis.call('ZREM', KEYS[1], pk)
  elseif ARGV[2] ~= '1' or cjson.decode(rec)['on_disconnect'] == 'fail' then
    local taken = take(ARGV[1], pk)
    if taken then table.insert(out, taken) end
  end
end
return out
"""
)

# KEYS: idx:q   ARGV: prefix, now, limit
EXPIRED = (
    _TAKE
    + """
local out = {}
for _, pk in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])) do
  local rec = take(ARGV[1], pk)
  if rec then table.insert(out, rec) end
end
return out
"""
)

# KEYS: conn, idx:seen, idx:closed   ARGV: client_id, server_id, channel, now, ttl_ms
_OPEN = """
local prev = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'server_id', ARGV[2], 'channel_name', ARGV[3],
           'connected_at', ARGV[4], 'last_seen', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
"""
OPEN = _OPEN + "return prev\n"

# KEYS: conn, idx:seen, idx:closed, cq   ARGV: client_id, server_id, channel, now, ttl_ms, prefix
# OPEN, then the client's pending question records in order: {previous record, {records...}}.
CONNECT = (
    _OPEN
    + """
local out = {}
for _, pk in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  local rec = redis.call('GET', ARGV[6] .. ':q:' .. pk)
  if rec then table.insert(out, rec) else redis.call('ZREM', KEYS[4], pk) end
end
return {prev, out}
"""
)

# KEYS: conn, idx:seen, idx:closed   ARGV: client_id, channel, now, ttl_ms
CLOSE = """
if redis.call('HGET', KEYS[1], 'channel_name') ~= ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'closed_at') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'closed_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""

# KEYS: conn, idx:seen   ARGV: client_id, now, ttl_ms
TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'closed_at') == 1 then return 0 end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seen') or '0')
if tonumber(ARGV[2]) > last then
  redis.call('HSET', KEYS[1], 'last_seen', ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
redis.call('HDEL', KEYS[1], 'alive_sent_at')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: conn   ARGV: now
MARK_ALIVE_SENT = """
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HEXISTS', KEYS[1], 'closed_at') == 0 then
  redis.call('HSET', KEYS[1], 'alive_sent_at', ARGV[1])
end
return 1
"""

# KEYS: cq, conn, idx:seen, idx:closed, claims...   ARGV: prefix, client_id, only_if_absent ('1'/'0')
# Returns {channel of its open socket or false, taken questions}, or false when only_if_absent and
# the client has a record again.
FORGET = (
    _TAKE
    + """
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return false end
local channel = false
if redis.call('HEXISTS', KEYS[2], 'closed_at') == 0 then channel = redis.call('HGET', KEYS[2], 'channel_name') end
local out = {}
for _, pk in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local taken = take(ARGV[1], pk)
  if taken then table.insert(out, taken) end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
for i = 5, #KEYS do redis.call('DEL', KEYS[i]) end
return {channel, out}
"""
)

# KEYS: claim   ARGV: owner, ttl_ms
CLAIM = """
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return holder
"""

# KEYS: sockets   ARGV: member, now, stale_before, limit, ttl_ms
ADMIT_SOCKET = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: lock   ARGV: owner
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Sweep and health --------------------------------------------------------------------------

# KEYS: conn, idx:seen, idx:closed   ARGV: client_id, field ('alive_sent_at'|'closed_at'), value
# Drops the record only while the field still holds the value the sweep read: of two sweeps that
# read the same record, exactly one drops it.
EVICT = """
local v = redis.call('HGET', KEYS[1], ARGV[2])
if not v or tonumber(v) ~= tonumber(ARGV[3]) then return 0 end
if ARGV[2] == 'alive_sent_at' and redis.call('HEXISTS', KEYS[1], 'closed_at') == 1 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# KEYS: idx:q   ARGV: prefix, start, stop
# Returns {members examined, client-ids of those questions that have no presence record}.
ORPHANED_CLIENTS = """
local members = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[3])
local out, seen = {}, {}
for _, pk in ipairs(members) do
  local rec = redis.call('GET', ARGV[1] .. ':q:' .. pk)
  if rec then
    local cid = cjson.decode(rec)['client_id']
    if not seen[cid] then
      seen[cid] = true
      if redis.call('EXISTS', ARGV[1] .. ':conn:' .. cid) == 0 then table.insert(out, cid) end
    end
  end
end
return {#members, out}
"""

# KEYS: cq, conn   ARGV: prefix
TAKE_ORPHANED = (
    _TAKE
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local out = {}
for _, pk in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local taken = take(ARGV[1], pk)
  if taken then table.insert(out, taken) else redis.call('ZREM', KEYS[1], pk) end
end
return out
"""
)

# KEYS: index   ARGV: prefix, record kind ('conn'|'q'), start, stop, remove ('1'|'0')
# Returns {members examined, members whose record is gone}.
PRUNE = """
local members = redis.call('ZRANGE', KEYS[1], ARGV[3], ARGV[4])
local dead = 0
for _, m in ipairs(members) do
  if redis.call('EXISTS', ARGV[1] .. ':' .. ARGV[2] .. ':' .. m) == 0 then
    dead = dead + 1
    if ARGV[5] == '1' then redis.call('ZREM', KEYS[1], m) end
  end
end
return {#members, dead}
"""

# KEYS: idx:q   ARGV: prefix, start, stop
# Returns {members examined, smallest asked_at among them as a string, or false}.
OLDEST_ASKED = """
local members = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[3])
local oldest = false
for _, pk in ipairs(members) do
  local rec = redis.call('GET', ARGV[1] .. ':q:' .. pk)
  if rec then
    local asked = tonumber(cjson.decode(rec)['asked_at'])
    if asked and (not oldest or asked < oldest) then oldest = asked end
  end
end
if oldest then return {#members, string.format('%.6f', oldest)} end
return {#members, false}
"""
