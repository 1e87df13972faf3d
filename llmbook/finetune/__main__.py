import sys

from llmbook.finetune.cli import main

sys.exit(main())
