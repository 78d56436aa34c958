"""``cards migrate``: set many customers' default card from a file, resumably."""
