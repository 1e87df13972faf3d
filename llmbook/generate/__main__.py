import sys

from llmbook.generate.cli import main

sys.exit(main())
