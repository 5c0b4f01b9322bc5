# Names for the firmware's type comments, for the type checker only: a stub, so nothing
# here is deployed and no module the board lacks (typing) is ever imported by it.
from typing import Any as Any
