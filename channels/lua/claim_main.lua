-- claim.lua run alone: KEYS and ARGV are its K and A.
return (claim(KEYS, ARGV))
