"""Storage: tables, the store, migrations, leases; the code that opens transactions."""
