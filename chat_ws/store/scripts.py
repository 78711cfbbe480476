"""Lua scripts of the Redis store: every multi-key change is one atomic script call.

Every key a script touches arrives in ``KEYS`` (RedisStore builds the names), and all of one
call's keys share one hash slot: they belong to one key bucket (``{prefix}:{<bucket>}:...``), the
bucket of one client. So the same scripts run on one Redis server and on Redis Cluster.

Keys of bucket ``b`` (``B`` = ``{prefix}:{b}``):
  B:q              hash   p-key -> question record (JSON)
  B:idx:q          zset   p-key -> expires_at
  B:seq            string the bucket's question counter (orders one client's questions)
  B:idx:seen       zset   client-id -> last_seen of open clients
  B:idx:closed     zset   client-id -> closed_at of clients in their reconnect grace
  B:conn:<client>  hash   presence record (TTL)
  B:cq:<client>    zset   p-key -> seq of the client's questions (TTL)
  B:claim:<name>   string a binding of the client (TTL)
  B:qs             hash   p-key -> journal field ("<conversation>\x1f<step>") of a pending step question
  B:j:<client>     hash   the client's journal: field -> "?<p-key>" while asked, the answer entry
                          (JSON: question record, answer message, answered_at) once answered (TTL)
  B:ja:<client>    zset   journal fields answered but not yet consumed by their asker -> answered_at
  B:idx:a          zset   "<client>\x1f<field>" of every unconsumed answer -> answered_at (the sweep
                          hands the old ones to answer_orphaned again)

A step question (ask(step=...)) is journaled by the script that resolves it; the asker consumes
its answers by asking again in the same conversation (ADD_QUESTION) or by ending it (CONSUME).

A question taken by the expiry sweep leaves its p-key in the client's ``cq`` (that key is not the
sweep's to name); every script that reads ``cq`` drops members whose record is gone.
"""

# Shared Lua helper: remove one question from the bucket hash, the bucket index, the client's
# index and the journal pointers; return its record or false.   q, idx, cq, qs: key names (cq may
# be false); pk: the p-key
_TAKE = """
local function take(q, idx, cq, qs, pk)
  local rec = redis.call('HGET', q, pk)
  redis.call('ZREM', idx, pk)
  if cq then redis.call('ZREM', cq, pk) end
  if not rec then return false end
  redis.call('HDEL', q, pk)
  redis.call('HDEL', qs, pk)
  return rec
end
"""

# Shared Lua helper: the client's answers of one conversation are consumed (its asker moved on).
#   ja, ida: key names; cid: the client-id; conv: the conversation
_CONSUME = """
local function consume(ja, ida, cid, conv)
  local prefix = conv .. '\\31'
  for _, f in ipairs(redis.call('ZRANGE', ja, 0, -1)) do
    if string.sub(f, 1, #prefix) == prefix then
      redis.call('ZREM', ja, f)
      redis.call('ZREM', ida, cid .. '\\31' .. f)
    end
  end
end
"""

# Shared Lua helper: the members of cq whose record is still in q, in seq order; prunes the rest.
_LIVE = """
local function live(q, cq)
  local members = redis.call('ZRANGE', cq, 0, -1)
  local pks, out = {}, {}
  for first = 1, #members, 1000 do  -- HMGET in chunks: Lua's unpack() stops near 8,000 values
    local chunk = {unpack(members, first, math.min(first + 999, #members))}
    local recs = redis.call('HMGET', q, unpack(chunk))
    for i, pk in ipairs(chunk) do
      if recs[i] then
        table.insert(pks, pk)
        table.insert(out, recs[i])
      else
        redis.call('ZREM', cq, pk)
      end
    end
  end
  return pks, out
end
"""

# KEYS: q, cq, idx:q, seq, conn, qs, j, ja, idx:a
# ARGV: record-json, p_key, expires_at, ttl_ms, max_pending, mode, client_id, conversation, field
# A step question (field not '') already journaled returns {'answered', entry}; one still pending
# returns {'pending', record} (the caller may take it over). Otherwise the question is stored only
# for a known client (mode "fail": only a connected one): returns {state, seq} where state is
# 'open', 'closed', 'none' or 'full' (seq false when not stored). Storing it consumes the client's
# earlier answers in this conversation: the asker moved on.
ADD_QUESTION = (
    _LIVE
    + _CONSUME
    + """
local field = ARGV[9]
if field ~= '' then
  local entry = redis.call('HGET', KEYS[7], field)
  if entry then
    if string.sub(entry, 1, 1) == '{' then return {'answered', entry} end
    local rec = redis.call('HGET', KEYS[1], string.sub(entry, 2))
    if rec then return {'pending', rec} end
  end
end
local state = 'open'
if redis.call('EXISTS', KEYS[5]) == 0 then
  state = 'none'
elseif redis.call('HEXISTS', KEYS[5], 'closed_at') == 1 then
  state = 'closed'
end
if state == 'none' or (state == 'closed' and ARGV[6] == 'fail') then return {state, false} end
local max = tonumber(ARGV[5])
if redis.call('ZCARD', KEYS[2]) >= max then
  local pks = live(KEYS[1], KEYS[2])
  if #pks >= max then return {'full', false} end
end
consume(KEYS[8], KEYS[9], ARGV[7], ARGV[8])
local seq = redis.call('INCR', KEYS[4])
local rec = '{"seq":' .. seq .. ',' .. string.sub(ARGV[1], 2)
redis.call('HSET', KEYS[1], ARGV[2], rec)
redis.call('ZADD', KEYS[2], seq, ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
if field ~= '' then
  redis.call('HSET', KEYS[7], field, '?' .. ARGV[2])
  redis.call('HSET', KEYS[6], ARGV[2], field)
  if redis.call('PTTL', KEYS[7]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[7], ARGV[4]) end
end
return {state, seq}
"""
)

# KEYS: q   ARGV: p_key, record-json
# A second asker of a pending step question takes it over: the record names its process now.
# 1 when done; 0 when the question was settled meanwhile.
TAKEOVER = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: ja, idx:a, j   ARGV: client_id, conversation, forget ('1'/'0')
# The conversation's answers are consumed; with forget, its journal is dropped too.
CONSUME = (
    _CONSUME
    + """
consume(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] == '1' then
  local prefix = ARGV[2] .. '\\31'
  for _, f in ipairs(redis.call('HKEYS', KEYS[3])) do
    if string.sub(f, 1, #prefix) == prefix then redis.call('HDEL', KEYS[3], f) end
  end
end
return 1
"""
)

# KEYS: cq, q, idx:q, qs, j, ja, idx:a   ARGV: client_id, answer-json, now, ttl_ms, p_key...
# The most recent of the client's questions whose p-key is among the p-keys, removed and returned.
# A step question's answer is journaled in the same step, as not yet consumed.
RESOLVE = (
    _TAKE
    + """
local want = {}
for i = 5, #ARGV do want[ARGV[i]] = true end
local members = redis.call('ZREVRANGE', KEYS[1], 0, -1)
for _, pk in ipairs(members) do
  if want[pk] then
    local field = redis.call('HGET', KEYS[4], pk)
    local rec = take(KEYS[2], KEYS[3], KEYS[1], KEYS[4], pk)
    if rec then
      if field then
        redis.call('HSET', KEYS[5], field,
          '{"question":' .. rec .. ',"answer":' .. ARGV[2] .. ',"answered_at":' .. ARGV[3] .. '}')
        redis.call('ZADD', KEYS[6], ARGV[3], field)
        redis.call('ZADD', KEYS[7], ARGV[3], ARGV[1] .. '\\31' .. field)
        if redis.call('PTTL', KEYS[5]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[5], ARGV[4]) end
        if redis.call('PTTL', KEYS[6]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[6], ARGV[4]) end
      end
      return rec
    end
  end
end
return false
"""
)

# KEYS: q, idx:q, cq, qs   ARGV: p_key, client_id ('' when not known), server_id, asker
# Removes the question only if it belongs to client_id (when given) and, when server_id is not
# '', only while the record names that asker (server_id and asker; a takeover names another).
TAKE = (
    _TAKE
    + """
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return false
end
if ARGV[2] ~= '' or ARGV[3] ~= '' then
  local r = cjson.decode(rec)
  if ARGV[2] ~= '' and r['client_id'] ~= ARGV[2] then return false end
  if ARGV[3] ~= '' and (r['server_id'] ~= ARGV[3] or (tonumber(r['asker']) or 0) ~= tonumber(ARGV[4])) then
    return false
  end
end
return take(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
"""
)

# KEYS: cq, q, idx:q, qs   ARGV: only_fail_fast ("1"/"0")
TAKE_CLIENT = (
    _TAKE
    + _LIVE
    + """
local out = {}
local pks, recs = live(KEYS[2], KEYS[1])
for i, pk in ipairs(pks) do
  if ARGV[1] ~= '1' or cjson.decode(recs[i])['on_disconnect'] == 'fail' then
    local taken = take(KEYS[2], KEYS[3], KEYS[1], KEYS[4], pk)
    if taken then table.insert(out, taken) end
  end
end
return out
"""
)

# KEYS: idx:q, q, qs   ARGV: now, limit
EXPIRED = (
    _TAKE
    + """
local out = {}
for _, pk in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local rec = take(KEYS[2], KEYS[1], false, KEYS[3], pk)
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

# KEYS: conn, idx:seen, idx:closed, cq, q   ARGV: client_id, server_id, channel, now, ttl_ms
# OPEN, then the client's pending question records in order: {previous record, {records...}}.
CONNECT = (
    _OPEN
    + _LIVE
    + """
local _, out = live(KEYS[5], KEYS[4])
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

# KEYS: cq, conn, idx:seen, idx:closed, q, idx:q, qs, j, ja, idx:a, claims...
# ARGV: client_id, only_if_absent ('1'/'0')
# Returns {channel of its open socket or false, taken questions}, or false when only_if_absent and
# the client has a record again. The client's journal goes with it.
FORGET = (
    _TAKE
    + _LIVE
    + """
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return false end
local channel = false
if redis.call('HEXISTS', KEYS[2], 'closed_at') == 0 then channel = redis.call('HGET', KEYS[2], 'channel_name') end
local out = {}
local pks = live(KEYS[5], KEYS[1])
for _, pk in ipairs(pks) do
  local taken = take(KEYS[5], KEYS[6], false, KEYS[7], pk)
  if taken then table.insert(out, taken) end
end
for _, f in ipairs(redis.call('ZRANGE', KEYS[9], 0, -1)) do redis.call('ZREM', KEYS[10], ARGV[1] .. '\\31' .. f) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[8], KEYS[9])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
for i = 11, #KEYS do redis.call('DEL', KEYS[i]) end
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

# KEYS: cq, conn, q, idx:q, qs
TAKE_ORPHANED = (
    _TAKE
    + _LIVE
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local out = {}
local pks = live(KEYS[3], KEYS[1])
for _, pk in ipairs(pks) do
  local taken = take(KEYS[3], KEYS[4], KEYS[1], KEYS[5], pk)
  if taken then table.insert(out, taken) end
end
return out
"""
)

# KEYS: index, conn of each member   ARGV: remove ('1'|'0'), the members (client-ids), in KEYS' order
# Counts (and removes) the page's members whose presence record is gone; checked here, atomically,
# so a client that is back keeps its entry.
PRUNE_PRESENCE = """
local dead = 0
for i = 2, #ARGV do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    dead = dead + 1
    if ARGV[1] == '1' then redis.call('ZREM', KEYS[1], ARGV[i]) end
  end
end
return dead
"""

# KEYS: idx:q, q   ARGV: start, stop, remove ('1'|'0')
# Returns {members examined, members whose record is gone}.
PRUNE_QUESTIONS = """
local members = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2])
local dead = 0
for _, pk in ipairs(members) do
  if redis.call('HEXISTS', KEYS[2], pk) == 0 then
    dead = dead + 1
    if ARGV[3] == '1' then redis.call('ZREM', KEYS[1], pk) end
  end
end
return {#members, dead}
"""

# KEYS: idx:q, q   ARGV: start, stop
# Returns {members examined, {client-id of each of those questions}, smallest asked_at or false}.
QUESTION_PAGE = """
local members = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2])
local clients, seen, oldest = {}, {}, false
if #members > 0 then
  for _, rec in ipairs(redis.call('HMGET', KEYS[2], unpack(members))) do
    if rec then
      local r = cjson.decode(rec)
      if not seen[r['client_id']] then
        seen[r['client_id']] = true
        table.insert(clients, r['client_id'])
      end
      local asked = tonumber(r['asked_at'])
      if asked and (not oldest or asked < oldest) then oldest = asked end
    end
  end
end
if oldest then oldest = string.format('%.6f', oldest) end
return {#members, clients, oldest}
"""

# KEYS: idx:a, j, ja   ARGV: member ("<client>\x1f<field>"), field, before, now
# Claims one unconsumed answer older than before for the sweep to hand over: it is stamped now (so
# it is handed again only after another wait) and its journal entry returned. A member whose entry
# is gone (the client was forgotten, the journal expired) is dropped: false.
CLAIM_ANSWER = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) >= tonumber(ARGV[3]) then return false end
local entry = redis.call('HGET', KEYS[2], ARGV[2])
if not entry or string.sub(entry, 1, 1) ~= '{' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[2])
  return false
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], 'XX', ARGV[4], ARGV[2])
return entry
"""
