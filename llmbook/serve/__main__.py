import sys

from llmbook.serve.cli import main

sys.exit(main())
