from fewshotseg.cli import main

raise SystemExit(main())
