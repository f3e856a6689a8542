-- Block design with catch trials (see catch_trials.toml for the rig and its parameters).
--
-- Each activation of the trigger `zone_entry` is one trial. A block of `block_size` trials holds exactly
-- `catch_per_block` catch trials at random positions (a Fisher-Yates shuffle on the seeded ctx:random), so
-- every block has the same share of catch trials and no run of them can go on for long.

local p         -- ctx.params, kept at start

local function new_block(ctx)
  local s = ctx.state
  local order = {}
  for i = 1, p.block_size do
    order[i] = i <= p.catch_per_block   -- true = catch trial
  end
  for i = p.block_size, 2, -1 do
    local j = ctx:random(i)
    order[i], order[j] = order[j], order[i]
  end
  s.order, s.pos, s.block = order, 0, s.block + 1
end

function on_start(ctx)
  p = ctx.params
  assert(p.catch_per_block <= p.block_size, "catch_per_block must not exceed block_size")
  ctx.state.block = 0
  ctx.state.trials = 0
  new_block(ctx)
end

function on_event(ctx, ev)
  if ev.trigger ~= "zone_entry" or not ev.active then
    return
  end
  local s = ctx.state
  if s.pos == p.block_size then
    new_block(ctx)
  end
  s.pos = s.pos + 1
  s.trials = s.trials + 1
  if s.order[s.pos] then
    ctx:mark(2)                                                   -- catch: no light
  else
    ctx:train(p.channel, p.period_us, p.width_us, p.count)
    ctx:mark(1)
  end
end
