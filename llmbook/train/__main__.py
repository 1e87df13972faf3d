import sys

from llmbook.train.cli import main

sys.exit(main())
