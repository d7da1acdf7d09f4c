from edge_node.cli import main

raise SystemExit(main())
