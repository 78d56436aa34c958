-- After ratelimit_rate.lua: the rate in force now.
return tostring(rate)
