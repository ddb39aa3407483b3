"""Moving cached and legacy Rails chat history into SQL (installed as
``flask_chat_migrations``; the commands are ``flask chat migrate ...``, see
``docs/migration.md``).

One concern per module:

- :mod:`.marshal` reads Ruby ``Marshal.dump`` bytes safely (rubymarshal, extended);
- :mod:`.entries` unwraps what Rails 3.0-7.1 cache stores and dalli wrote;
- :mod:`.history` checks that a value is a legacy chat history;
- :mod:`.merge` pairs the copies of a conversation held by several users;
- :mod:`.legacy_ids` numbers legacy messages deterministically;
- :mod:`.sources` reads a legacy Redis or a Rails FileStore directory;
- :mod:`.legacy_import` and :mod:`.cache_to_db` run the two migrations, with
  :mod:`.checkpoint` (resuming), :mod:`.report` and :mod:`.dry_run`;
- :mod:`.keys` names the Redis keys they write; :mod:`.errors` the skip reasons;
- :mod:`.cli` is ``flask chat migrate``.
"""
