from llamahomed.engine.worker.serve import main

main()
