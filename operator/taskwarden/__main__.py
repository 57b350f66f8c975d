from taskwarden.cli import main

raise SystemExit(main())
