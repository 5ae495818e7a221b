from e2e.env.cli import main

main()
