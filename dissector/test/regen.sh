#!/bin/sh
# Regenerate the dissector's golden files on purpose, then review them with `git diff`.
exec "$(dirname "$0")/run.sh" --regen
