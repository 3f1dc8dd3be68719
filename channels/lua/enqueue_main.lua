-- enqueue.lua run alone: KEYS and ARGV are its K and A.
return enqueue(KEYS, ARGV)
