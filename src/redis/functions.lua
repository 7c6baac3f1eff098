#!lua name=wspush
-- wspush's Redis function library (docs/cluster.md). Every node loads it
-- when its link connects (FUNCTION LOAD REPLACE), so producers with only a
-- Redis client can push too:
--
--   FCALL wspush_push 0 CHANNEL JOB [NODE REF [MESSAGE_ID]]
--
-- JOB is a push or publish request without "op" (users, or topic, and
-- content; title, type, key as on the control socket). In one atomic step
-- the function takes the next seq of CHANNEL, stamps the time and
-- publishes "HEADER\nJOB" on CHANNEL, JOB byte for byte as given; every
-- node delivers it from its subscription. It returns the seq.

local function seq_key(channel)
  return 'wspush:' .. channel .. ':seq'
end

-- The channel's last RECENT messages by seq, for nodes that missed some.
local RECENT = 1024

local function recent_key(channel)
  return 'wspush:' .. channel .. ':recent'
end

-- The mailbox (docs/cluster.md, "Mailbox"), on when a node with --mailbox
-- set its bounds with wspush_config. Keys of CHANNEL:
--   config        hash: per_user, ttl_ms, bytes
--   m             hash seq -> payload
--   meta          hash seq -> "CHARGE:EXPIRY" (bytes charged, Unix ms)
--   mseq          sorted set of the stored seqs (oldest first)
--   bytes         the bytes charged now
--   ids           hash message id -> seq (scheduled runs' own ids)
--   u:USER        sorted set: the user's history (seqs)
--   h:USER        sorted set: the seqs held for the user
--   k:USER        hash: latest-value key -> held seq
--   online:USER   hash: node -> 1 while the user has a connection there
--   on:NODE       set: the users online on NODE (dropped with its lease)
local RECORD_OVERHEAD = 128
-- Messages expired per call at most (the rest go with the next calls).
local SWEEP = 64

local function key(channel, name)
  return 'wspush:' .. channel .. ':' .. name
end

local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local function mailbox_config(channel)
  local c = redis.call('HMGET', key(channel, 'config'), 'per_user', 'ttl_ms', 'bytes')
  return tonumber(c[1] or '0') or 0, tonumber(c[2] or '0') or 0, tonumber(c[3] or '0') or 0
end

-- The header and the job of a stored payload.
local function split(payload)
  local at = string.find(payload, '\n', 1, true)
  if not at then
    return nil, nil
  end
  local ok, header = pcall(cjson.decode, string.sub(payload, 1, at - 1))
  local ok2, job = pcall(cjson.decode, string.sub(payload, at + 1))
  if not ok or not ok2 then
    return nil, nil
  end
  return header, job
end

local function unique_users(job)
  local seen, list = {}, {}
  if type(job) ~= 'table' or type(job.users) ~= 'table' then
    return list
  end
  for _, u in ipairs(job.users) do
    if type(u) == 'string' and not seen[u] then
      seen[u] = true
      list[#list + 1] = u
    end
  end
  return list
end

-- The bytes charged for stored message SEQ and its expiry (Unix ms).
local function meta(channel, seq)
  local m = redis.call('HGET', key(channel, 'meta'), seq)
  if not m then
    return 0, 0
  end
  local charge, expires = string.match(m, '^(%d+):(%d+)$')
  return tonumber(charge) or 0, tonumber(expires) or 0
end

-- Forget stored message SEQ (its users' entries are dropped when read).
-- Returns the bytes still charged.
local function drop(channel, seq)
  local payload = redis.call('HGET', key(channel, 'm'), seq)
  local charge = meta(channel, seq)
  redis.call('HDEL', key(channel, 'm'), seq)
  redis.call('HDEL', key(channel, 'meta'), seq)
  redis.call('ZREM', key(channel, 'mseq'), seq)
  if payload then
    local id = string.match(payload, '^[^\n]*"id":"([^"]+)"')
    if id then
      redis.call('HDEL', key(channel, 'ids'), id)
    end
  end
  return redis.call('DECRBY', key(channel, 'bytes'), charge)
end

-- Drop the oldest messages while they are past their TTL (a bounded
-- number per call) or the bytes charged (BYTES now) exceed CAP.
local function sweep(channel, now, cap, bytes)
  for _ = 1, SWEEP do
    local first = redis.call('ZRANGE', key(channel, 'mseq'), 0, 0)
    if #first == 0 then
      return
    end
    local _, expires = meta(channel, first[1])
    if expires > now and (cap <= 0 or bytes <= cap) then
      return
    end
    bytes = drop(channel, first[1])
  end
end

-- Whether USER has a connection on a node whose lease is alive.
local function online(channel, user, now)
  local nodes = redis.call('HKEYS', key(channel, 'online:' .. user))
  for _, node in ipairs(nodes) do
    local until_ms = tonumber(redis.call('ZSCORE', key(channel, 'nodes'), node) or '0') or 0
    if until_ms > now then
      return true
    end
  end
  return false
end

-- Record seq for each listed user; returns the users it is held for.
local function record(channel, seq, job, now, per_user, ttl)
  local held = {}
  for _, user in ipairs(unique_users(job)) do
    local history, holds = key(channel, 'u:' .. user), key(channel, 'h:' .. user)
    redis.call('ZADD', history, seq, seq)
    if not online(channel, user, now) then
      held[#held + 1] = user
      if type(job.key) == 'string' then
        local keys = key(channel, 'k:' .. user)
        local older = redis.call('HGET', keys, job.key)
        if older then
          redis.call('ZREM', holds, older)
          redis.call('ZREM', history, older)
        end
        redis.call('HSET', keys, job.key, seq)
        redis.call('PEXPIRE', keys, ttl)
      end
      redis.call('ZADD', holds, seq, seq)
      redis.call('PEXPIRE', holds, ttl)
    end
    local extra = redis.call('ZCARD', history) - per_user
    if extra > 0 then
      for _, old in ipairs(redis.call('ZRANGE', history, 0, extra - 1)) do
        redis.call('ZREM', history, old)
        redis.call('ZREM', holds, old)
      end
    end
    redis.call('PEXPIRE', history, ttl)
  end
  return held
end

local function push(keys, args)
  local channel, job = args[1], args[2]
  if not channel or channel == '' or not job then
    return redis.error_reply('usage: FCALL wspush_push 0 CHANNEL JOB [NODE REF [MESSAGE_ID]]')
  end
  local node, ref, id = args[3] or '', tonumber(args[4] or '0'), args[5]
  if not string.match(node, '^[%w_.-]*$') or not ref or ref < 0 then
    return redis.error_reply('wspush_push: bad NODE or REF')
  end
  if id and not string.match(id, '^[%w_.-]+$') then
    return redis.error_reply('wspush_push: bad MESSAGE_ID')
  end
  local ok, decoded = pcall(cjson.decode, job)
  if not ok or type(decoded) ~= 'table' then
    return redis.error_reply('wspush_push: the job is not a JSON object')
  end
  if decoded.content == nil then
    return redis.error_reply('wspush_push: the job has no "content"')
  end
  if decoded.topic ~= nil and type(decoded.topic) ~= 'string' then
    return redis.error_reply('wspush_push: "topic" must be a string')
  end
  if decoded.users ~= nil and type(decoded.users) ~= 'table' then
    return redis.error_reply('wspush_push: "users" must be a list of names')
  end
  local seq = redis.call('INCR', seq_key(channel))
  local ts = now_ms()
  local header = string.format('{"seq":%d,"ts":%d,"node":"%s","ref":%d', seq, ts, node, ref)
  if id then
    header = header .. ',"id":"' .. id .. '"'
  end
  local per_user, ttl, cap = mailbox_config(channel)
  local users = decoded.topic == nil and unique_users(decoded) or {}
  local stored = per_user > 0 and ttl > 0 and #users > 0
  if stored then
    local held = record(channel, seq, decoded, ts, per_user, ttl)
    if #held > 0 then
      header = header .. ',"held":' .. cjson.encode(held)
    end
  end
  local payload = header .. '}\n' .. job
  if stored then
    local text = string.format('%d', seq)
    local charge = #payload + RECORD_OVERHEAD * #users
    redis.call('HSET', key(channel, 'm'), text, payload)
    redis.call('HSET', key(channel, 'meta'), text, string.format('%d:%d', charge, ts + ttl))
    redis.call('ZADD', key(channel, 'mseq'), seq, text)
    local bytes = redis.call('INCRBY', key(channel, 'bytes'), charge)
    if id then
      redis.call('HSET', key(channel, 'ids'), id, text)
    end
    sweep(channel, ts, cap, bytes)
  end
  redis.call('ZADD', recent_key(channel), seq, payload)
  redis.call('ZREMRANGEBYRANK', recent_key(channel), 0, -(RECENT + 1))
  redis.call('PUBLISH', channel, payload)
  return seq
end

-- FCALL wspush_config 0 CHANNEL PER_USER TTL_MS BYTES: the mailbox's
-- bounds (a node with --mailbox sets them whenever its link connects).
local function config(keys, args)
  local per_user, ttl, bytes = tonumber(args[2] or ''), tonumber(args[3] or ''), tonumber(args[4] or '')
  if not args[1] or not per_user or not ttl or not bytes then
    return redis.error_reply('usage: FCALL wspush_config 0 CHANNEL PER_USER TTL_MS BYTES')
  end
  redis.call('HSET', key(args[1], 'config'), 'per_user', per_user, 'ttl_ms', ttl, 'bytes', bytes)
  return 1
end

-- The stored messages SEQS (strings) still there, in order; entries of
-- messages that are gone are dropped from the user's sets.
local function bodies(channel, user, seqs)
  local list = {}
  for _, seq in ipairs(seqs) do
    local payload = redis.call('HGET', key(channel, 'm'), seq)
    if payload then
      list[#list + 1] = payload
    else
      redis.call('ZREM', key(channel, 'u:' .. user), seq)
      redis.call('ZREM', key(channel, 'h:' .. user), seq)
    end
  end
  return list
end

-- FCALL wspush_online 0 CHANNEL NODE USER SINCE COLLECT: a connection of
-- USER opened on NODE (unless COLLECT is 1: an HTTP collect). Returns what
-- it must get first, in seq order: the held messages or, with SINCE (a
-- number; '' for none), every stored one above it. Held ones count as
-- delivered from now on.
local function connect(keys, args)
  local channel, node, user, since = args[1], args[2], args[3], args[4]
  if not channel or not node or not user or not since then
    return redis.error_reply('usage: FCALL wspush_online 0 CHANNEL NODE USER SINCE COLLECT')
  end
  if args[5] ~= '1' then
    redis.call('HSET', key(channel, 'online:' .. user), node, 1)
    redis.call('SADD', key(channel, 'on:' .. node), user)
  end
  local _, _, cap = mailbox_config(channel)
  local bytes = tonumber(redis.call('GET', key(channel, 'bytes')) or '0') or 0
  sweep(channel, now_ms(), cap, bytes)
  local after = tonumber(since)
  local counter = tonumber(redis.call('GET', seq_key(channel)) or '0') or 0
  if after and after > counter then
    after = nil -- not a seq of this channel: say nothing about what the client has
  end
  local seqs
  if after then
    seqs = redis.call('ZRANGEBYSCORE', key(channel, 'u:' .. user), '(' .. after, '+inf')
  else
    seqs = redis.call('ZRANGE', key(channel, 'h:' .. user), 0, -1)
  end
  local list = bodies(channel, user, seqs)
  redis.call('DEL', key(channel, 'h:' .. user), key(channel, 'k:' .. user))
  return list
end

-- FCALL wspush_offline 0 CHANNEL NODE USER: USER's last connection on
-- NODE closed.
local function offline(keys, args)
  local channel, node, user = args[1], args[2], args[3]
  if not channel or not node or not user then
    return redis.error_reply('usage: FCALL wspush_offline 0 CHANNEL NODE USER')
  end
  redis.call('HDEL', key(channel, 'online:' .. user), node)
  redis.call('SREM', key(channel, 'on:' .. node), user)
  return 1
end

-- FCALL wspush_present 0 CHANNEL NODE USER...: NODE has connections of
-- these users (sent again after the node's link reconnects).
local function present(keys, args)
  local channel, node = args[1], args[2]
  if not channel or not node then
    return redis.error_reply('usage: FCALL wspush_present 0 CHANNEL NODE USER...')
  end
  for i = 3, #args do
    redis.call('HSET', key(channel, 'online:' .. args[i]), node, 1)
    redis.call('SADD', key(channel, 'on:' .. node), args[i])
  end
  return #args - 2
end

-- FCALL wspush_claim 0 CHANNEL USER SEQ: a message held for USER (its node
-- lease had lapsed) reached one of USER's connections live after all.
local function claim(keys, args)
  if not args[1] or not args[2] or not args[3] then
    return redis.error_reply('usage: FCALL wspush_claim 0 CHANNEL USER SEQ')
  end
  return redis.call('ZREM', key(args[1], 'h:' .. args[2]), args[3])
end

-- The records of stored message SEQ: {user, status} for each listed user
-- that still has it.
local function records_of(channel, seq, only)
  local payload = redis.call('HGET', key(channel, 'm'), seq)
  if not payload then
    return nil, {}
  end
  local header, job = split(payload)
  local found = {}
  for _, user in ipairs(unique_users(job)) do
    if (not only or only == user) and redis.call('ZSCORE', key(channel, 'u:' .. user), seq) then
      local held = redis.call('ZSCORE', key(channel, 'h:' .. user), seq)
      found[#found + 1] = {user = user, status = held and 'held' or 'delivered'}
    end
  end
  return header, found
end

-- FCALL wspush_messages 0 CHANNEL USER STATUS AFTER LIMIT: one page of
-- records (USER and STATUS '' for any), oldest first, as the JSON the
-- control socket's `messages` answers.
local function messages(keys, args)
  local channel, user, status = args[1], args[2], args[3]
  local after, limit = tonumber(args[4] or ''), tonumber(args[5] or '')
  if not channel or not user or not status or not after or not limit then
    return redis.error_reply('usage: FCALL wspush_messages 0 CHANNEL USER STATUS AFTER LIMIT')
  end
  local only = user ~= '' and user or nil
  local set = only and key(channel, 'u:' .. only) or key(channel, 'mseq')
  local seqs = redis.call('ZRANGEBYSCORE', set, '(' .. after, '+inf')
  local list, next_seq = {}, cjson.null
  for _, seq in ipairs(seqs) do
    local header, found = records_of(channel, seq, only)
    local group = {}
    for _, r in ipairs(found) do
      if status == '' or status == r.status then
        group[#group + 1] = {
          messageId = header.id or ('R-' .. seq),
          seq = tonumber(seq),
          user = r.user,
          status = r.status,
          ts = header.ts,
        }
      end
    end
    if #group > 0 then
      if #list > 0 and #list + #group > limit then
        next_seq = list[#list].seq
        break
      end
      for _, r in ipairs(group) do
        list[#list + 1] = r
      end
    end
  end
  if #list == 0 then
    return '{"messages":[],"next":null}' -- cjson writes an empty table as {}
  end
  return cjson.encode({messages = list, next = next_seq})
end

-- FCALL wspush_delete 0 CHANNEL MESSAGE_ID: delete every record of a
-- message; returns how many there were.
local function delete(keys, args)
  local channel, id = args[1], args[2]
  if not channel or not id then
    return redis.error_reply('usage: FCALL wspush_delete 0 CHANNEL MESSAGE_ID')
  end
  local seq = redis.call('HGET', key(channel, 'ids'), id) or string.match(id, '^R%-(%d+)$')
  if not seq then
    return 0
  end
  local header, found = records_of(channel, seq, nil)
  if not header or (header.id and header.id ~= id) then
    return 0
  end
  for _, r in ipairs(found) do
    redis.call('ZREM', key(channel, 'u:' .. r.user), seq)
    redis.call('ZREM', key(channel, 'h:' .. r.user), seq)
  end
  drop(channel, seq)
  return #found
end

-- FCALL wspush_range 0 CHANNEL FROM TO: the recent window's messages with
-- seqs FROM to TO, in seq order (those it still has).
local function range(keys, args)
  local from, to = tonumber(args[2] or ''), tonumber(args[3] or '')
  if not args[1] or not from or not to then
    return redis.error_reply('usage: FCALL wspush_range 0 CHANNEL FROM TO')
  end
  return redis.call('ZRANGEBYSCORE', recent_key(args[1]), from, to)
end

-- FCALL wspush_seed 0 CHANNEL SEQ: raise CHANNEL's counter to at least SEQ
-- (a node's highest seen), so that a Redis that lost its data never hands
-- out a seq again. Returns the counter.
local function seed(keys, args)
  local floor = tonumber(args[2] or '')
  if not args[1] or not floor then
    return redis.error_reply('usage: FCALL wspush_seed 0 CHANNEL SEQ')
  end
  local key = seq_key(args[1])
  local current = tonumber(redis.call('GET', key) or '0') or 0
  if current < floor then
    redis.call('SET', key, string.format('%d', floor))
    return floor
  end
  return current
end

-- FCALL wspush_lease 0 CHANNEL NODE TTL_MS: NODE is alive for TTL_MS more;
-- answers the nodes alive now, by name. The node that sorts first relays
-- plain PUBLISHed jobs (docs/cluster.md).
local function lease(keys, args)
  local ttl = tonumber(args[3] or '')
  if not args[1] or not args[2] or not ttl then
    return redis.error_reply('usage: FCALL wspush_lease 0 CHANNEL NODE TTL_MS')
  end
  local key = 'wspush:' .. args[1] .. ':nodes'
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  redis.call('ZADD', key, now + ttl, args[2])
  -- A node whose lease ran out is dead: its users are no longer online there.
  for _, dead in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now)) do
    local users = 'wspush:' .. args[1] .. ':on:' .. dead
    for _, user in ipairs(redis.call('SMEMBERS', users)) do
      redis.call('HDEL', 'wspush:' .. args[1] .. ':online:' .. user, dead)
    end
    redis.call('DEL', users)
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return redis.call('ZRANGE', key, 0, -1)
end

redis.register_function('wspush_push', push)
redis.register_function('wspush_lease', lease)
redis.register_function('wspush_seed', seed)
redis.register_function('wspush_config', config)
redis.register_function('wspush_online', connect)
redis.register_function('wspush_offline', offline)
redis.register_function('wspush_present', present)
redis.register_function('wspush_claim', claim)
redis.register_function('wspush_delete', delete)
redis.register_function{function_name = 'wspush_messages', callback = messages, flags = {'no-writes'}}
redis.register_function{function_name = 'wspush_range', callback = range, flags = {'no-writes'}}
