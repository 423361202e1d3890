"""`python -m ws_sidecar`: stream CoinGlass liquidations into the durable spool."""

from ws_sidecar.app import main

raise SystemExit(main())
