"""The state package: every Redis key, Lua script and layout (the state step, serving's
reads and writes, the catalogue, the model store, the dump). Nothing outside it names a key."""
