// The public header compiles as C++ and its symbols link.
#include "weft.h"

#include <cstring>

int main()
{
	weft_open_options opts = WEFT_OPEN_OPTIONS_INIT;
	weft_iter_options iopts = WEFT_ITER_OPTIONS_INIT;
	(void)iopts;
	if (opts.version != WEFT_OPEN_OPTIONS_VERSION)
		return 1;
	if (std::strcmp(weft_version(), WEFT_VERSION_STRING) != 0)
		return 1;
	return weft_version_number() == WEFT_VERSION_NUMBER ? 0 : 1;
}
