# Built sample C clients (libghsample_<variant>.so, _ghsample_<variant>): see cext_samples/.
