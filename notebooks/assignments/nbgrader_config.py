"""nbgrader configuration of the minillava classroom assignments: this folder is an nbgrader course directory.

    cd notebooks/assignments
    nbgrader generate_assignment a1_visual_tokens --force   # source/ -> release/ (the student version)
    nbgrader autograde a1_visual_tokens                     # submitted/<student>/ -> autograded/<student>/

See README.md in this folder for the whole cycle (release, collect, grade, feedback).
"""

c = get_config()  # noqa: F821 (nbgrader's config loader defines it)

c.CourseDirectory.course_id = "minillava"
# a notebook's first cell imports torch and minillava (several seconds on a busy CPU); the models are tiny
c.Execute.timeout = 300
