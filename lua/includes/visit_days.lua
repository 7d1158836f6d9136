--[[
  visit_days: the visit day a hold id names, as a day number, for the rules that count
  a patient's holds and bookings by visit date (at most M within 7 days).

  A hold id is "<department>.<YYYYMMDD>.<token>" (inventory/store/keys.py, hold_id_for):
  the date is the department-day tag's, the hospital's local visit date.

  Provides:
    visit_day(hold_id) -> days since 1970-01-01 of the id's visit date, or nil when the
                          id names no date
    local_day(ms)      -> the day number of an instant in China (UTC+8, one time zone),
                          the same calendar tags are named by
  Expects: nothing.
]]

local function day_from_civil(y, m, d)
  -- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm):
  -- integer arithmetic only, so every server computes the same number.
  if m <= 2 then
    y = y - 1
  end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function visit_day(hold_id)
  local y, m, d = string.match(hold_id, '^[^.]+%.(%d%d%d%d)(%d%d)(%d%d)%.')
  if not y then
    return nil
  end
  return day_from_civil(tonumber(y), tonumber(m), tonumber(d))
end

local function local_day(ms)
  return math.floor((ms + 8 * 3600 * 1000) / 86400000)
end
