from rillet_runtime.cli import main

main()
